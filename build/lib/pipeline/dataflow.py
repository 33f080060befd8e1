"""Beam options that send the components' Beam jobs to Google Cloud Dataflow.

    python -m runners dataflow-args [--config FILE] [--set section.key=value ...]

ExampleGen, StatisticsGen, Transform and Evaluator then run their Beam jobs on
Dataflow while the orchestrator stays where it is: Vertex AI Pipelines with
`--set kubeflow.use_dataflow=true` (see `runners.kubeflow_v2`). Workers start
from `gcp.image`, this project's image (./Dockerfile), which already holds the
pinned Beam SDK and the project's packages, so nothing is installed at job start.
"""

from typing import List

from contract.config import PipelineConfig, require


def dataflow_beam_args(config: PipelineConfig) -> List[str]:
    """`--flag=value` Beam options for Dataflow, from the gcp.* and dataflow.* settings."""
    df = config.dataflow
    require(config, "Running Beam on Dataflow", required=("gcp.project", "gcp.region", "gcp.image"),
            gcs=("dataflow.temp_location",) + (("dataflow.staging_location",) if df.staging_location else ()))
    temp = df.temp_location.rstrip("/")
    args = [
        "--runner=DataflowRunner",
        f"--project={config.gcp.project}",
        f"--region={config.gcp.region}",
        f"--temp_location={temp}",
        f"--staging_location={df.staging_location or temp + '/staging'}",
        f"--machine_type={df.machine_type}",
        f"--max_num_workers={df.max_num_workers}",
        f"--disk_size_gb={df.disk_size_gb}",
        f"--sdk_container_image={config.gcp.image}",
        # The image's Beam SDK is the one to run; don't stage another copy per job.
        "--sdk_location=container",
        "--experiments=use_runner_v2",
    ]
    if config.gcp.service_account:
        args.append(f"--service_account_email={config.gcp.service_account}")
    return args
