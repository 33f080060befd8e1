"""The shipped Prometheus and Alertmanager configurations (deploy/*.yml), pointed at given addresses.

The end-to-end alert test and the monitoring benchmark run the real binaries on loopback ports with
these files, changed only where a deployment changes them: the targets, the webhook's URL and the
intervals. Only the scrape jobs given a target are kept: the Kubernetes job needs a cluster (and Debian's
Prometheus package is built without Kubernetes discovery, which upstream's binary has).
"""

import os
from typing import Dict, Optional

import yaml

from contract.files import write_text

DEPLOY_DIR = os.path.dirname(os.path.abspath(__file__))
PROMETHEUS_FILE = os.path.join(DEPLOY_DIR, "prometheus.yml")
ALERTMANAGER_FILE = os.path.join(DEPLOY_DIR, "alertmanager.yml")


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def prometheus_config(targets: Dict[str, str], alertmanager: str, interval: Optional[str] = None) -> dict:
    """deploy/prometheus.yml with the scrape jobs named in `targets` (job name -> host:port) only, the rules
    by absolute path, and `interval` (e.g. "1s") as its scrape and evaluation interval when given."""
    config = _load(PROMETHEUS_FILE)
    if interval:
        config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [os.path.join(DEPLOY_DIR, rule) for rule in config["rule_files"]]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    unknown = set(targets) - {job["job_name"] for job in config["scrape_configs"]}
    if unknown:
        raise ValueError(f"no scrape job {sorted(unknown)} in {PROMETHEUS_FILE}")
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    for job in config["scrape_configs"]:
        job["static_configs"][0]["targets"] = [targets[job["job_name"]]]
    return config


def alertmanager_config(webhook_url: str, group_wait: Optional[str] = None) -> dict:
    """deploy/alertmanager.yml with the retrain receiver at `webhook_url`, and `group_wait` (also the group
    interval) when given."""
    config = _load(ALERTMANAGER_FILE)
    if group_wait:
        config["route"].update(group_wait=group_wait, group_interval=group_wait)
    (retrain,) = [r for r in config["receivers"] if r["name"] == "retrain"]
    retrain["webhook_configs"][0]["url"] = webhook_url
    return config


def write(config: dict, path: str) -> str:
    return write_text(path, yaml.safe_dump(config, sort_keys=False))
