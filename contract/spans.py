"""`{SPAN}` patterns (`data.train_pattern: span-{SPAN}/train/*`): which files a pattern means, and its newest span.

ImportExampleGen resolves the same patterns inside a run; the fleet's triggers and the monitoring job's
training baseline resolve them here, without TensorFlow, to look at the data before or after a run.
"""

import glob
import os
import re
from typing import List, Optional, Tuple


def span_regex(pattern: str) -> re.Pattern:
    """A regex of paths relative to the input base that match a `{SPAN}` pattern; group 1 is the span."""
    parts = [re.escape(p).replace(r"\*", "[^/]*").replace(r"\?", "[^/]") for p in pattern.split("{SPAN}")]
    return re.compile("^" + r"(\d+)".join(parts) + "$")


def latest_span_files(input_base: str, pattern: str) -> Tuple[Optional[int], List[str]]:
    """(newest span, its files) of a `{SPAN}` pattern; (None, the files) of a pattern without spans."""
    span = None
    if "{SPAN}" in pattern:
        regex = span_regex(pattern)
        spans = {int(m.group(1)) for path in glob.glob(os.path.join(input_base, pattern.replace("{SPAN}", "*")))
                 if (m := regex.match(os.path.relpath(path, input_base)))}
        if not spans:
            return None, []
        span = max(spans)
        pattern = pattern.replace("{SPAN}", str(span))
    return span, sorted(p for p in glob.glob(os.path.join(input_base, pattern)) if os.path.isfile(p))
