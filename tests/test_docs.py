"""The documentation stays true: the site builds with --strict, the generated references match today's code,
the README's quick-start commands still print what the README shows, history stays in CHANGELOG.md, and the
built site renders in headless Chromium.

The quick-start tests run the README's commands with small settings on the shared `pushed_run` (its serving
directory copied where a command could write), so they add no pipeline run of their own. They compare the
shape of the output (the key lines, as regular expressions), not its numbers: each pattern must match the
README's block and the real output.
"""

import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import requests
import yaml
from contract.processes import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
MKDOCS = os.path.join(REPO, ".venv-docs", "bin", "mkdocs")
TFX_EDGE = os.path.join(os.path.dirname(sys.executable), "tfx-edge")
# The body of the README's REST Classify call.
CLASSIFY_BODY = ('{"signature_name": "classify", "examples": [{"fare": 12.25, "trip_miles": 2.1, "trip_seconds": 540, '
                 '"payment_type": "Credit Card", "trip_start_hour": 19}]}')


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", os.path.join(REPO, "tools", "gen_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- generated references --------------------------------------------------------------------------------

def test_generated_references_are_fresh():
    gen = _generator()
    assert not gen.stale(gen.pages()), "docs/reference is stale: run `make docs-reference` and commit the result"


def _default_yaml_settings():
    """Every dotted setting default.yaml lists, the commented-out top-level ones (derived paths) included."""
    text = _read(os.path.join(REPO, "pipeline", "configs", "default.yaml"))
    found = set()
    for key, value in yaml.safe_load(text).items():
        found |= {f"{key}.{sub}" for sub in value} if isinstance(value, dict) else {key}
    found |= set(re.findall(r"^# (\w+): ", text, flags=re.M))
    return found


def test_every_setting_of_default_yaml_has_a_line_in_the_configuration_reference():
    page = _read(os.path.join(REPO, "docs", "reference", "configuration.md"))
    settings = _default_yaml_settings()
    assert len(settings) > 90
    missing = sorted(s for s in settings if f"| `{s}` |" not in page)
    assert not missing, f"not in docs/reference/configuration.md: {missing}"


# --- the site ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built with `mkdocs build --strict`: a broken link, a missing page or anchor fails it."""
    if not os.path.exists(MKDOCS):
        pytest.fail(f"{MKDOCS} is missing: `make docs-setup` installs it (make test does)")
    out = str(tmp_path_factory.mktemp("site"))
    built = subprocess.run([MKDOCS, "build", "--strict", "--config-file", os.path.join(REPO, "mkdocs.yml"),
                            "--site-dir", out], cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-6000:]
    return out


def test_site_builds_strictly_with_every_page(site):
    nav = yaml.safe_load(_read(os.path.join(REPO, "mkdocs.yml")))["nav"]

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    for page in pages(nav):
        assert os.path.exists(os.path.join(site, page.replace(".md", ".html"))), page
    api = _read(os.path.join(site, "reference", "python-api.html"))
    assert "ServingClient" in api and "EdgeModel" in api and "load_config" in api


@pytest.mark.slow  # needs Debian's chromium (make test installs it)
def test_site_renders_in_headless_chromium(site):
    from reports.browser import open_in_chromium

    index = open_in_chromium(os.path.join(site, "index.html"))
    assert "Two commands" in index.dom and "Bring your own data" in index.dom
    assert index.console == [], index.console
    reference = open_in_chromium(os.path.join(site, "reference", "configuration.html"))
    assert "data.input_base" in reference.dom and "serving.rest_port" in reference.dom
    assert reference.console == [], reference.console


# --- history has one home ----------------------------------------------------------------------------------

def _pages():
    yield README
    for path in sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)):
        if os.path.basename(path) != "changelog.md":  # it includes CHANGELOG.md
            yield path


def test_readme_is_short():
    assert len(_read(README).splitlines()) <= 400


def test_no_page_outside_the_changelog_carries_issue_numbers_or_dated_history():
    """Program output in code blocks may show timestamps; prose may not carry dates (benchmarks.md says when
    each figure was measured)."""
    issue = re.compile(r"\bissues? ?#?\d+|\(issue\b|BEGIN [^\n]*\(issue", re.I)
    date = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
    problems = []
    for path in _pages():
        text = _read(path)
        name = os.path.relpath(path, REPO)
        problems += [f"{name}: {m.group(0)!r}" for m in issue.finditer(text)]
        if name != os.path.join("docs", "benchmarks.md"):
            prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)
            problems += [f"{name}: date {m.group(0)} in prose" for m in date.finditer(prose)]
    assert not problems, problems


# --- the README's quick start ------------------------------------------------------------------------------

def _code_blocks(text):
    """The contents of the fenced code blocks of a Markdown text."""
    blocks, current = [], None
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _readme_block(command):
    """The README's fenced block whose first line is `$ <command>...`."""
    for block in _code_blocks(_read(README)):
        if block.startswith(f"$ {command}"):
            return block
    raise AssertionError(f"the README has no block starting with `$ {command}`")


def _assert_shape(patterns, readme, real):
    for pattern in patterns:
        assert re.search(pattern, readme, flags=re.M), f"the README no longer shows {pattern!r}"
        assert re.search(pattern, real, flags=re.M), f"the command no longer prints {pattern!r}:\n{real}"


def _run(args, cwd, timeout=300):
    done = subprocess.run(args, cwd=str(cwd), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout



@pytest.fixture
def trips(eval_examples, tmp_path):
    """trips.jsonl: the first three raw eval trips without the label, one JSON object per line."""
    path = tmp_path / "trips.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for example in eval_examples[:3]:
            row = {}
            for name, feature in sorted(example.features.feature.items()):
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                if values and name != "tips":
                    row[name] = values[0].decode() if isinstance(values[0], bytes) else values[0]
            f.write(json.dumps(row) + "\n")
    return str(path)


def _serving_copy(pushed_run, root):
    """An output directory whose serving directory is a copy of `pushed_run`'s (commands may write there)."""
    config, _ = pushed_run
    shutil.copytree(config.serving_dir, os.path.join(root, "serving"))
    return str(root)


@pytest.mark.slow
def test_quickstart_run_prints_what_the_readme_shows(pushed_run):
    config, _ = pushed_run
    real = _read(os.path.join(config.log_dir, "terminal.txt"))  # what the shared run printed
    _assert_shape([
        r"^Pipeline \S+: data \S+ \(train: \d+ files, eval: \d+ files\)$", r"^Config: \S+\.config\.yaml$",
        r"^Logs: \S+\.log$", r"^\[ 1/\d+\] ImportExampleGen\s+started$", r"^\[\s*\d+/\d+\] Trainer\s+done\s+[\d.]+s$",
        r"^Run \d{4}-\d\d-\d\dT[\d:.]+$", r"^  data validation passed: \S+report\.html$",
        r"^  tuned hyper-parameters: hidden_units=\d+, num_layers=\d+, learning_rate=[\d.]+, dropout=[\d.]+, l2=",
        r"^  training: default, 1 replica\(s\), global batch \d+ \(\d+ per replica\), \d+ steps$",
        r"^  metric\s+candidate\s+baseline$", r"^  auc\s+[\d.]+\s+-$",
        r"^  \(no baseline: no model was blessed before this one\)$", r"^  blessed: yes \(overall slice: AUC >= ",
        r"^  pushed to: \S+/serving/taxi/\d+$", r"^  edge model\s+float TFLite\s+int8 TFLite\s+SavedModel$",
        r"^  size \(bytes\)\s+\d+\s+\d+\s+-\s+\(int8 [\d.]+x float; weights [\d.]+x\)$",
        r"^  gate: int8 AUC drop beyond the 8-bit output's resolution ", r"^  Edge TPU ready: yes$",
        r"^  edge model pushed to: \S+/edge/taxi/\d+$", r"^  total time: [\d.]+s$", r"^  report:\s+\S+\.html$",
        r"^Finished in [\d.]+s$",
    ], _readme_block("make run"), real)


@pytest.mark.slow
def test_quickstart_serve_predict_and_rest(pushed_run, trips, tmp_path):
    out = _serving_copy(pushed_run, tmp_path / "out")
    grpc_port, rest_port = free_port(), free_port()
    settings = ["--set", f"output_dir={out}", "--set", f"serving.port={grpc_port}", "--set",
                f"serving.rest_port={rest_port}"]
    server = subprocess.Popen([TFX_EDGE, "serving", "serve", *settings, "--set", "serving.workers=1", "--set",
                               "serving.request_log_sample_rate=0"], cwd=str(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while not any(line.startswith("serving ") for line in lines):
            line = server.stdout.readline()
            assert line or server.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        _assert_shape([
            r"^[\d:]+ Loaded taxi version \d+ in [\d.]+s \(\d+ warm-up requests\)\.$",
            r"^serving \S+models\.config: gRPC 127\.0\.0\.1:\d+, REST http://127\.0\.0\.1:\d+/v1/models/taxi, metrics "
            r"/monitoring/prometheus/metrics \(1 worker, batching max \d+ / \d+ us; polling every \d+s\); Ctrl-C stops$",
        ], _readme_block("make serve"), "".join(lines))

        assert "$ tfx-edge serving predict --input trips.jsonl\n" in _read(README)
        predicted = _run([TFX_EDGE, "serving", "predict", "--input", trips, *settings], tmp_path)
        block = _readme_block("tfx-edge serving predict")
        _assert_shape([r'^\{"probability": [\d.e-]+\}$'], block, predicted)
        assert len(predicted.splitlines()) == 3

        status = requests.get(f"http://127.0.0.1:{rest_port}/v1/models/taxi", timeout=30).text
        classified = requests.post(f"http://127.0.0.1:{rest_port}/v1/models/taxi:classify", data=CLASSIFY_BODY,
                                   timeout=30).text
        assert f"-d '{CLASSIFY_BODY}' localhost:8501/v1/models/taxi:classify" in block
        _assert_shape([r'^\{"model_version_status": \[\{"version": "\d+", "state": "AVAILABLE", "status": '
                       r'\{"error_code": "OK", "error_message": ""\}\}\]\}$'], block, status)
        _assert_shape([r'^\{"results": \[\[\["0", [\d.e-]+\], \["1", [\d.e-]+\]\]\]\}$'], block, classified)
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_quickstart_score(pushed_run, tmp_path):
    config, _ = pushed_run
    out = _serving_copy(pushed_run, tmp_path / "out")
    scored = _run([TFX_EDGE, "serving", "score", "--out", str(tmp_path / "scores"), "--set", f"output_dir={out}",
                   "--set", f"metadata_path={config.metadata_path}"], tmp_path)
    _assert_shape([
        r"^score: checked [\d,]+ examples in \d+ file\(s\): PASSED; report \S+report\.html$",
        r"^score: wrote [\d,]+ rows \(source, record, probability, class\) to \S+ as 1 parquet file\(s\) in [\d.]+s$",
    ], _readme_block("tfx-edge serving score --out /tmp/scores"), scored)


@pytest.mark.slow
def test_quickstart_edge_runtime(pushed_run, trips, tmp_path):
    config, _ = pushed_run
    readme = _read(README)
    assert "$ python -m edge predict outputs/edge/taxi trips.jsonl\n" in readme
    assert "$ python -m edge check outputs/edge/taxi\n" in readme
    block = _readme_block("python -m edge predict")
    predicted = _run([sys.executable, "-m", "edge", "predict", config.model_edge_dir, trips], tmp_path)
    _assert_shape([r'^\{"probability": [\d.]+, "decision": (true|false)\}$'], block, predicted)
    checked = _run([sys.executable, "-m", "edge", "check", config.model_edge_dir], tmp_path)
    _assert_shape([
        r"^\S+/edge/taxi/\d+: model taxi version \d+, from \S+$",
        r"^  int8\s+\d+ bytes  AUC [\d.]+  decisions agreeing with SavedModel [\d.]+%$",
        r"^  files: all match the manifest$", r"^  Edge TPU ready: every op is supported",
    ], block, checked)


@pytest.mark.slow
def test_quickstart_init_on_data_it_has_never_seen(tmp_path):
    from tests.datasets import write_screening

    data = write_screening(str(tmp_path / "screening"))
    block = _readme_block('make init ARGS="--data-root')
    assert "--label diagnosis --out " in block.splitlines()[0]
    written = _run([TFX_EDGE, "schema", "init", "--data-root", data, "--label", "diagnosis", "--out",
                    str(tmp_path / "model")], tmp_path)
    _assert_shape([
        r"^read 400 rows from 1 file\(s\) under \S+: one set of files, no train/eval directories: hash-split 4:1",
        r"^task: binary \(guessed from the label 'diagnosis': integers with 2 distinct values \(0, 1\)\)$",
        r"^numeric \(30\): area_error, ", r"^categorical \(1\): clinic$", r"^excluded: patient_id ",
        r"^wrote \S+/schema\.pbtxt \(33 features; ", r"^wrote \S+/config\.yaml$",
        r'^next: make run ARGS="--config \S+/config\.yaml"$',
    ], block, written)


@pytest.mark.slow
def test_quickstart_fleet_lays_out_tenants_and_lists_them(tmp_path):
    """`make fleet-demo` trains two tenants (minutes); here the same demo is laid out without its runs."""
    demo = str(tmp_path / "fleet-demo")
    laid_out = _run([TFX_EDGE, "fleet", "demo", "--out", demo, "--no-run"], tmp_path)
    status = _run([TFX_EDGE, "fleet", "status", "--fleet", os.path.join(demo, "fleet.yaml")], tmp_path)
    _assert_shape([
        r"^demo fleet: \S+/fleet\.yaml$",
        r"^model\s+last run\s+status\s+reason\s+serving\s+metric\s+span\s+next due\s*$",
        r"^acme-tips\s+\S", r"^globex-tips\s+\S",
    ], _readme_block("make fleet-demo"), laid_out + status)
