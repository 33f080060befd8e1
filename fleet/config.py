"""The fleet file: defaults -> tiers -> tenants -> models, each model resolved to a full pipeline configuration.

    fleet:      {output_dir: DIR, concurrency: 2}       # shared MLMD, serving dir, state; parallel runs
    defaults:   ENTRY
    tiers:      {NAME: ENTRY}
    tenants:    {NAME: ENTRY + {tier: NAME, models: {NAME: ENTRY}}}

An ENTRY holds `settings` (any subset of pipeline/configs/default.yaml), `data_root`, `schedule` (cron),
`triggers` and `metric` ({bound: B, labelled: GLOB}: the `metric` trigger's bound on the served model's
headline metric, which is also its `monitoring.metric_bound`, and where newly labelled TFRecords land,
relative to data_root). Later layers override
earlier ones key by key (settings merge deeply). Each model becomes the
pipeline `<tenant>-<model>` (its own MLMD pipeline context, so its own baselines and span windows), served
as `<tenant>-<model>` next to every other model in the one shared `models.config`. The resolved
configuration goes through `contract.config.load_config`, the loader every pipeline command uses.
"""

import copy
import dataclasses
import os
import re
from typing import Any, Dict, List, Optional

import yaml
from croniter import croniter

from contract.config import PipelineConfig, is_remote, load_config
from contract.errors import ConfigError
from contract.files import write_text

TRIGGERS = ("new_data", "schedule", "drift", "metric")
ENTRY_KEYS = {"settings", "data_root", "schedule", "triggers", "metric"}
METRIC_KEYS = {"bound", "labelled"}
TENANT_KEYS = ENTRY_KEYS | {"tier", "models"}
TOP_KEYS = {"fleet", "defaults", "tiers", "tenants"}
FLEET_KEYS = {"output_dir", "concurrency"}
# Settings the fleet owns: each model's names and paths derive from the fleet's output_dir and its own name.
FLEET_OWNED = ("pipeline_name", "model_name", "output_dir", "pipeline_root", "metadata_path", "serving_dir",
               "log_dir")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclasses.dataclass
class FleetModel:
    """One tenant's model, resolved: what the controller checks and runs."""

    tenant: str
    model: str
    schedule: str
    triggers: List[str]
    config: PipelineConfig
    settings: Dict[str, Any]  # the merged settings mapping that `config` was loaded from
    # The `metric` trigger: {"bound": float, "labelled": glob under data.input_base ("" = latest eval split)}.
    metric: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.pipeline_name


@dataclasses.dataclass
class Fleet:
    path: str
    output_dir: str
    concurrency: int
    models: List[FleetModel]

    @property
    def state_path(self) -> str:
        return os.path.join(self.output_dir, "fleet.sqlite")

    @property
    def config_dir(self) -> str:
        return os.path.join(self.output_dir, "fleet", "configs")

    def get(self, name: str) -> FleetModel:
        for model in self.models:
            if model.name == name or f"{model.tenant}/{model.model}" == name:
                return model
        raise ConfigError(f"no model {name!r} in {self.path}; known: {', '.join(m.name for m in self.models)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys silently; in a fleet file that would drop a tenant or model."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate name {key!r} at line {key_node.start_mark.line + 1} "
                                  f"(first at line {seen[key] + 1}); each tenant, tier and model once")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _path(base_dir: str, path: str) -> str:
    """Relative paths are relative to the fleet file; gs:// ones (Vertex AI fleets) are kept as they are."""
    return path if is_remote(path) else os.path.join(base_dir, path)


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if is_remote(root) else os.path.join(root, *parts)


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _entry(value: Any, where: str, allowed=ENTRY_KEYS) -> Dict[str, Any]:
    entry = _mapping(value, where)
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(allowed))}")
    settings = _mapping(entry.get("settings"), f"{where}.settings")
    owned = sorted(set(settings) & set(FLEET_OWNED))
    if owned:
        raise ConfigError(f"{where}.settings.{owned[0]}: set by the fleet (from the tenant and model names and "
                          "fleet.output_dir); remove it")
    return entry


def _layer(resolved: Dict[str, Any], entry: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(resolved)
    out["settings"] = _merge(resolved.get("settings", {}), entry.get("settings") or {})
    for key in ("data_root", "schedule", "triggers", "metric"):
        if key in entry:
            out[key] = entry[key]
    return out


def _check_schedule(expression: str, where: str) -> None:
    if expression and not croniter.is_valid(expression):
        raise ConfigError(f"{where}.schedule: {expression!r} is not a cron expression (e.g. '0 3 * * *')")


def load_fleet(path: str) -> Fleet:
    """Reads and resolves the fleet file; a ConfigError names the entry and key at fault."""
    if not os.path.exists(path):
        raise ConfigError(f"fleet file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.load(f, Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"fleet file {path} is not valid YAML: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    raw = _mapping(raw, path)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(TOP_KEYS))}")
    fleet = _mapping(raw.get("fleet"), "fleet")
    unknown = sorted(set(fleet) - FLEET_KEYS)
    if unknown:
        raise ConfigError(f"fleet: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(FLEET_KEYS))}")
    base_dir = os.path.dirname(os.path.abspath(path))
    output_dir = _path(base_dir, str(fleet.get("output_dir", "outputs/fleet")))
    concurrency = fleet.get("concurrency", 2)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"fleet.concurrency must be a positive number of parallel runs, got {concurrency!r}")

    defaults = _layer({"settings": {}, "data_root": "", "schedule": "", "triggers": ["new_data"], "metric": {}},
                      _entry(raw.get("defaults"), "defaults"))
    tiers = {name: _entry(value, f"tiers.{name}") for name, value in _mapping(raw.get("tiers"), "tiers").items()}
    tenants = _mapping(raw.get("tenants"), "tenants")
    if not tenants:
        raise ConfigError(f"{path}: no tenants")
    models: List[FleetModel] = []
    seen: Dict[str, str] = {}
    for tenant, tenant_value in tenants.items():
        where = f"tenants.{tenant}"
        if not _NAME.match(str(tenant)):
            raise ConfigError(f"{where}: tenant names are lower-case letters, digits and _ (they become "
                              "pipeline and serving model names)")
        entry = _entry(tenant_value, where, TENANT_KEYS)
        resolved = defaults
        tier = entry.get("tier")
        if tier is not None:
            if tier not in tiers:
                raise ConfigError(f"{where}.tier: no tier {tier!r}; tiers: {', '.join(tiers) or '(none)'}")
            resolved = _layer(resolved, tiers[tier])
        resolved = _layer(resolved, entry)
        tenant_models = _mapping(entry.get("models"), f"{where}.models")
        if not tenant_models:
            raise ConfigError(f"{where}.models: a tenant needs at least one model")
        for model, model_value in tenant_models.items():
            mwhere = f"{where}.models.{model}"
            if not _NAME.match(str(model)):
                raise ConfigError(f"{mwhere}: model names are lower-case letters, digits and _")
            final = _layer(resolved, _entry(model_value, mwhere))
            name = f"{tenant}-{model}"
            if name in seen:
                raise ConfigError(f"{mwhere}: duplicate model name {name!r} (also {seen[name]})")
            seen[name] = mwhere
            models.append(_resolve(tenant, model, final, mwhere, output_dir, base_dir))
    return Fleet(os.path.abspath(path), output_dir, concurrency, models)


def _resolve(tenant: str, model: str, entry: Dict[str, Any], where: str, output_dir: str,
             base_dir: str) -> FleetModel:
    triggers = entry["triggers"]
    if not isinstance(triggers, list) or not all(t in TRIGGERS for t in triggers):
        raise ConfigError(f"{where}.triggers: {triggers!r}; each one of {', '.join(TRIGGERS)}")
    schedule = str(entry["schedule"] or "")
    _check_schedule(schedule, where)
    if "schedule" in triggers and not schedule:
        raise ConfigError(f"{where}.triggers: 'schedule' needs a cron expression in schedule")
    metric = _check_metric(entry["metric"], "metric" in triggers, where)
    if not entry["data_root"]:
        raise ConfigError(f"{where}.data_root is not set (in the model, its tenant, tier or defaults)")
    name = f"{tenant}-{model}"
    own = _join(output_dir, "tenants", name)
    if metric:
        # One bound for the trigger, the monitoring series and its alert: the served metric's.
        given = (entry["settings"].get("monitoring") or {}).get("metric_bound")
        if given is not None and float(given) != metric["bound"]:
            raise ConfigError(f"{where}: metric.bound {metric['bound']:g} and settings.monitoring.metric_bound "
                              f"{given} disagree; set the bound once, in metric.bound")
        entry = _layer(entry, {"settings": {"monitoring": {"metric_bound": metric["bound"]}}})
    settings = _merge(entry["settings"], {
        "pipeline_name": name,
        "model_name": name,
        "output_dir": output_dir,
        "pipeline_root": _join(own, "pipeline_root"),
        "log_dir": _join(own, "logs"),
        "data": {"input_base": _path(base_dir, str(entry["data_root"]))},
    })
    schema = settings.get("schema_file")
    if schema and not os.path.isabs(schema) and os.path.exists(os.path.join(base_dir, schema)):
        settings["schema_file"] = os.path.join(base_dir, schema)
    config = load_settings_mapping(settings, where)
    return FleetModel(tenant, model, schedule, list(triggers), config, settings, metric)


def _check_metric(value: Any, wanted: bool, where: str) -> Dict[str, Any]:
    metric = _mapping(value, f"{where}.metric")
    unknown = sorted(set(metric) - METRIC_KEYS)
    if unknown:
        raise ConfigError(f"{where}.metric: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(METRIC_KEYS))}")
    bound = metric.get("bound")
    if wanted and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
        raise ConfigError(f"{where}.metric.bound: the 'metric' trigger needs a number (the served model's AUC, "
                          f"accuracy or RMSE it must stay on the good side of), got {bound!r}")
    return {"bound": float(bound), "labelled": str(metric.get("labelled") or "")} if wanted else {}


def load_settings_mapping(settings: Dict[str, Any], where: str) -> PipelineConfig:
    """The pipeline loader on a mapping: written to a temporary YAML file, read back by `load_config`."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as f:
        yaml.safe_dump(settings, f, sort_keys=False)
    try:
        return load_config(f.name)
    except ConfigError as e:
        raise ConfigError(f"{where}.settings: {e}") from None
    finally:
        os.unlink(f.name)


def write_model_config(model: FleetModel, config_dir: str) -> str:
    """The model's settings as a `--config` file for `tfx-edge pipeline run` (and Airflow's task)."""
    return write_text(os.path.join(config_dir, f"{model.name}.yaml"),
                            yaml.safe_dump(model.settings, sort_keys=False))


def describe(model: FleetModel, full: bool = False) -> str:
    head = {"tenant": model.tenant, "model": model.model, "schedule": model.schedule, "triggers": model.triggers}
    body = model.config.to_dict() if full else model.settings
    return yaml.safe_dump({"fleet": head, "pipeline": body}, sort_keys=False)


def find(models: List[FleetModel], names: Optional[List[str]]) -> List[FleetModel]:
    if not names:
        return models
    wanted = set(names)
    unknown = wanted - {m.name for m in models} - {m.tenant for m in models}
    if unknown:
        raise ConfigError(f"unknown tenant/model {sorted(unknown)[0]!r}; known: {', '.join(m.name for m in models)}")
    return [m for m in models if m.name in wanted or m.tenant in wanted]
