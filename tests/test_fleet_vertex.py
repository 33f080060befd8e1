"""Vertex AI schedules for a fleet, built and validated offline (no network: connections are refused)."""

import json
import socket
import textwrap

import pytest

from contract.errors import ConfigError
from fleet.config import load_fleet
from runners import vertex_schedules as fleet_runner

FLEET = """
    fleet: {output_dir: "gs://bucket/fleet"}
    defaults:
      schedule: "0 3 * * *"
      triggers: [schedule]
      settings:
        gcp: {project: my-project, region: europe-west4, image: "europe-docker.pkg.dev/my-project/ml/taxi:1"}
        tuner: {enabled: false}
        edge: {enabled: false}
    tenants:
      acme: {models: {search: {data_root: "gs://bucket/acme/search"}}}
      globex: {schedule: "30 1 * * 1", models: {search: {data_root: "gs://bucket/globex/search"}}}
"""


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(self, address):
        raise AssertionError(f"network connection to {address} attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_every_tenant_gets_a_valid_schedule_request_offline(tmp_path, no_network, monkeypatch):
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format
    from tfx.components.util import udf_utils

    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(FLEET))
    fleet = load_fleet(str(path))
    resolve = udf_utils.UserModuleFilePipDependency.resolve
    roots = {m.config.pipeline_root for m in fleet.models}
    # The real wheel packaging, into tmp rather than gs://bucket/... (as tests/test_runners.py does).
    monkeypatch.setattr(udf_utils.UserModuleFilePipDependency, "resolve",
                        lambda self, root: resolve(self, str(tmp_path / "wheels") if root in roots else root))
    written = fleet_runner.build_schedules(fleet, str(tmp_path / "vertex"))
    assert [p.rsplit("/", 1)[1] for p in written] == ["acme-search.schedule.json", "globex-search.schedule.json"]
    requests = [aiplatform_v1.CreateScheduleRequest.from_json(open(p).read()) for p in written]
    acme, globex = requests
    assert acme.parent == "projects/my-project/locations/europe-west4"
    assert (acme.schedule.cron, globex.schedule.cron) == ("TZ=UTC 0 3 * * *", "TZ=UTC 30 1 * * 1")
    job = globex.schedule.create_pipeline_job_request.pipeline_job
    assert job.display_name == "globex-search" and job.labels["tenant"] == "globex"
    assert job.runtime_config.gcs_output_directory == "gs://bucket/fleet/tenants/globex-search/pipeline_root"
    spec = json_format.MessageToDict(aiplatform_v1.PipelineJob.pb(job).pipeline_spec)
    assert spec["pipelineInfo"]["name"] == "globex-search"
    compiled = json.loads((tmp_path / "vertex" / "acme-search.pipeline.json").read_text())
    assert compiled["pipelineSpec"]["pipelineInfo"]["name"] == "acme-search"
    fleet_runner.validate(requests)
    with pytest.raises(ConfigError, match=r"duplicate display names \['acme-search'\]"):
        fleet_runner.validate([acme, acme])
    acme.schedule.cron = "TZ=UTC 61 * * * *"
    with pytest.raises(ConfigError, match="does not parse"):
        fleet_runner.validate([acme])
