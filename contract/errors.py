"""Error types that cross layers: raised low, reported by the command lines at the top."""


class ConfigError(ValueError):
    """A setting or an input is missing, unknown or of the wrong type; the message names it. Exit status 2."""


class BadInputError(ConfigError):
    """An input file or directory cannot be read as the data format it should be in; the message names the file."""


class DataValidationFailed(RuntimeError):
    """The anomaly gate stopped the run on bad data; `report_text` is what a person should read. Exit status 3."""

    def __init__(self, summary: str, report_text: str, report_path: str):
        super().__init__(f"data validation failed: {summary}. Report: {report_path}")
        self.report_text = report_text
        self.report_path = report_path
