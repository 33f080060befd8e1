"""Run the pipeline on this machine (`tfx-edge pipeline run`): LocalDagRunner, Beam DirectRunner, SQLite MLMD.

The terminal shows one line per component as it starts and ends, then a
summary (metrics of candidate and baseline, blessing, where the model went).
Everything TensorFlow, Beam and TFX log goes to `<log_dir>/run-<time>.log`.
Exit status: 0 when the run completed (blessed or not), 1 when a component
failed, 2 for a configuration error or unreadable input file, 3 when the
anomaly gate stopped the run on bad data (its report is printed, with its path),
4 when another run of the same pipeline on the same ML Metadata store is under
way (`--wait` waits for it instead).

Runs of one pipeline go one at a time (`contract.locks.RunLock` on
`config.run_lock_path`): each run's Evaluator compares its candidate with the
model the previous run blessed, and its Pusher numbers versions after the
previous push, so two at once would both compare against the same baseline and
the later push would win whatever it measured. The summary, report and "pushed
to" lines are read back from this run's own ML Metadata records.
"""

import contextlib
import ctypes
import gc
import logging
import os
import re
import sys
import time
from typing import Dict, Optional, TextIO

from contract.config import PipelineConfig
from contract.errors import ConfigError, DataValidationFailed
from contract.locks import EXIT_BUSY, Busy, RunLock, describe

# LocalDagRunner says "Component X", BeamDagRunner "node X".
_STARTED = re.compile(r"^(?:Component|node) (\S+) is running\.$")
_FINISHED = re.compile(r"^(?:Component|node) (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")
_SKIPPED = re.compile(r"^Skipping execution for")


class ProgressHandler(logging.Handler):
    """Turns TFX's per-component log records into one terminal line at start and end."""

    def __init__(self, out: TextIO, total: int, release_memory: bool = False):
        super().__init__(level=logging.INFO)
        self.out, self.total, self.release_memory = out, total, release_memory
        self.timings: Dict[str, float] = {}
        self.current: Optional[str] = None
        self.started = 0.0
        self.note = ""
        self.index = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # A malformed third-party log record must not break the run.
            return
        if m := _STARTED.match(message):
            self.current, self.started, self.note = m.group(1), time.time(), ""
            self.index += 1
            self._print(f"[{self.index:2d}/{self.total}] {self.current:32s} started")
        elif _CACHED.match(message):
            self.note = "cached"
        elif _SKIPPED.match(message):
            self.note = "skipped"
        elif (m := _FINISHED.match(message)) and m.group(1) == self.current:
            seconds = time.time() - self.started
            self.timings[self.current] = seconds
            note = f" ({self.note})" if self.note else ""
            self._print(f"[{self.index:2d}/{self.total}] {self.current:32s} done {seconds:7.1f}s{note}")
            self.current = None
            if self.release_memory and not self.note:  # a cached or skipped component allocated nothing
                release_memory()

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def release_memory() -> None:
    """Returns to the OS what a finished component freed, before the next one runs in this process.

    LocalDagRunner runs every component in one process, one after another, so the
    process keeps the largest heap any of them reached plus what each left behind:
    Keras' global graph state (the Tuner's and Trainer's models), reference cycles
    not yet collected, and free glibc heap pages that malloc keeps for reuse
    (`malloc_trim` hands them back). Only between components: clearing Keras state
    under a running component would break it. A full collection walks every live
    object, 0.28 s with TFX imported: `freeze_imports` first keeps the imported
    modules' objects out of it.
    """
    keras = sys.modules.get("tf_keras")
    if keras is not None:
        keras.backend.clear_session()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator is left alone
        pass


def freeze_imports() -> None:
    """Moves every object alive now (the imported libraries) out of the garbage collector's reach.

    They outlive the run; during it a collection no longer walks them (`release_memory`), nor
    does the interpreter's last collection at exit (1.2 s). A host process that runs several
    pipelines (the tests) hands the previous run's frozen objects back first, so what they
    left as garbage is still collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def output_to_log(log_path: str):
    """Sends fd 1 and 2 (Python, C++ and subprocess output alike) to the log file.

    Yields a stream bound to the original terminal for progress lines.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def one_line_reason(error: BaseException) -> str:
    """The most specific line of an exception chain, for a person reading the terminal."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".strip()


def data_validation_failure(error: BaseException):
    """The anomaly gate's `DataValidationFailed` in an exception chain, or None."""
    while error is not None:
        if isinstance(error, DataValidationFailed):
            return error
        error = error.__cause__ or error.__context__
    return None


def run(config: PipelineConfig, out: TextIO = sys.stdout, dag_runner=None, wait: bool = False) -> int:
    """Runs the pipeline with `dag_runner` (default: LocalDagRunner); returns the process exit status.

    Refuses (EXIT_BUSY) while another run of this pipeline holds its lock, or with `wait` waits for it.
    """
    lock = RunLock(config.run_lock_path)

    def waiting(holder) -> None:
        out.write(f"waiting: pipeline {config.pipeline_name} is already running ({describe(holder)}); "
                  "this run starts when it ends\n")
        out.flush()

    try:
        lock.acquire(wait, waiting)
    except Busy as busy:
        out.write(f"error: pipeline {config.pipeline_name} is already running on {config.metadata_path}: "
                  f"{describe(busy.holder)}. Runs of one pipeline go one at a time; wait for it with "
                  "`tfx-edge pipeline run --wait`\n")
        return EXIT_BUSY
    try:
        return _run(config, out, dag_runner, lock)
    finally:
        lock.release()


def _run(config: PipelineConfig, out: TextIO, dag_runner, lock: RunLock) -> int:
    for path in (config.pipeline_root, config.log_dir, os.path.dirname(config.metadata_path)):
        os.makedirs(path, exist_ok=True)
    run_started = time.time()
    log_path = os.path.join(config.log_dir, time.strftime("run-%Y%m%d-%H%M%S.log"))
    lock.note(log=log_path)
    try:
        # The preflight reads tf.Example protos: TensorFlow's start-up lines go to the log, not the terminal.
        with output_to_log(log_path):
            from pipeline import inputs

            counts = inputs.check_inputs(config)
    except ConfigError as e:
        # One line per problem: the preflight reports every problem it found at once.
        out.write("".join(f"error: {line}\n" for line in str(e).splitlines()))
        return 2
    out.write(f"Pipeline {config.pipeline_name}: data {config.input_base} "
              f"({', '.join(f'{k}: {v} files' for k, v in counts.items())})\n")
    config_path = log_path[:-len(".log")] + ".config.yaml"
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(config.to_yaml())
    out.write(f"Config: {config_path}\n")
    out.write(f"Logs: {log_path}\n")
    out.flush()

    handler = None
    started = time.time()
    status = 0
    with output_to_log(log_path) as original_stdout, open(log_path, "a", encoding="utf-8") as log_stream:
        # Progress goes where the caller asked; stdout itself now points at the log.
        terminal = original_stdout if out is sys.stdout else out
        logging.basicConfig(stream=log_stream, level=logging.INFO, force=True)
        from absl import logging as absl_logging
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner

        from formats.spans import describe
        from pipeline.pipeline import backfill_pipelines, create_pipeline, read_prior_runs

        absl_logging.set_verbosity(absl_logging.INFO)
        try:
            prior = read_prior_runs(config)
            dag = create_pipeline(config, prior)
            # Spans of the window that no run ingested yet: ingested first, one ExampleGen run each.
            backfills = backfill_pipelines(config, prior)
            if backfills:
                spans = ", ".join(describe(span, config.data.spanned_pattern) for span in prior.backfill_spans)
                terminal.write(f"Window of {config.data.span_window} spans: ingesting {spans} first "
                               "(on disk, not ingested by an earlier run)\n")
            # LocalDagRunner runs one component at a time in this thread; a caller's runner may not.
            handler = ProgressHandler(terminal, total=len(dag.components) + len(backfills),
                                      release_memory=dag_runner is None)
            if handler.release_memory:
                freeze_imports()
            logging.getLogger().addHandler(handler)
            # Beam executors parse sys.argv + beam args as absl flags: a host
            # program's own flags (pytest's -v) would swallow the Beam args.
            saved_argv, sys.argv = sys.argv, sys.argv[:1]
            try:
                for pipeline in backfills + [dag]:
                    (dag_runner or LocalDagRunner()).run(pipeline)
            finally:
                sys.argv = saved_argv
        except Exception as error:  # Reported in one line; the traceback is in the log.
            logging.exception("Pipeline failed")
            component = handler.current if handler else None
            rejected = data_validation_failure(error)
            if rejected is not None:
                terminal.write(f"\nSTOPPED by {component or 'AnomalyGate'}: the data did not pass validation; "
                               "nothing was trained or pushed.\n"
                               f"{rejected.report_text}\nReport: {rejected.report_path}\n")
                status = 3
            else:
                terminal.write(f"\nFAILED{' in ' + component if component else ''}: {one_line_reason(error)}\n"
                               f"Full traceback: {log_path}\n")
                status = 1
        finally:
            # Later reads of MLMD log too; they belong in the log, not the summary.
            # A NullHandler keeps the next root-level log call from re-installing
            # a stderr handler (logging's implicit basicConfig).
            for h in list(logging.getLogger().handlers):
                logging.getLogger().removeHandler(h)
            logging.getLogger().addHandler(logging.NullHandler())
            logging.getLogger().setLevel(logging.WARNING)
    # This run read back from ML Metadata once, for both the summary and the report.
    store, summary = read_summary(config, log_path, run_started)
    if status == 0 and summary is not None:
        from reports.summary import format_summary

        out.write(format_summary(summary, config, handler.timings) + "\n")
        out.write(f"  logs:      {log_path}\n")
    report = write_run_report(config, log_path, store, summary)
    if report:
        out.write(f"  report:    {report}\n")
    out.write(f"Finished in {time.time() - started:.1f}s\n")
    out.flush()
    return status


def read_summary(config: PipelineConfig, log_path: str, started: float):
    """(store, the run that began at `started`, read back from it); (None, None) when this run registered none
    (it failed before its first component)."""
    from pipeline.metadata import open_metadata
    from reports.summary import read_run

    with output_to_log(log_path):
        try:
            store = open_metadata(config.metadata_path)
            return store, read_run(store, config.pipeline_name, started_after=started)
        except LookupError:
            return None, None


def write_run_report(config: PipelineConfig, log_path: str, store, summary) -> str:
    """The run's HTML report (failed runs too: they show how far they got); "" if there is no run to show."""
    from reports.html import write_report

    if summary is None:
        return ""  # failed before the first component registered a run
    try:
        with output_to_log(log_path):
            return write_report(config, summary=summary, store=store)
    except Exception:  # A report is a view of the run; it never changes the run's outcome.
        import traceback

        with open(log_path, "a", encoding="utf-8") as log:
            log.write("Could not write the run report:\n")
            traceback.print_exc(file=log)
        return ""
