"""Run the pipeline on this machine with TFX's BeamDagRunner.

    python -m runners run --runner beam [--config FILE] [--set section.key=value ...]

The same DAG, MLMD store, progress lines, log file and summary as
`runners/local.py`; only the orchestrator differs: Beam schedules the components
(`node X is running`). The components' own Beam jobs use the DirectRunner mode
and worker count in `beam.direct_running_mode` / `beam.direct_num_workers`
(set by `create_pipeline`), e.g. `--set beam.direct_running_mode=multi_processing
--set beam.direct_num_workers=2`.
"""

import sys
from typing import TextIO

from contract.config import PipelineConfig
from runners import local


def run(config: PipelineConfig, out: TextIO = sys.stdout, wait: bool = False) -> int:
    """Runs the pipeline; returns the process exit status (see `runners.local.run`)."""
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    return local.run(config, out, dag_runner=BeamDagRunner(), wait=wait)
