"""The one error type of a refused request, shared by version management, the request core and both transports."""

from typing import Optional

import grpc


class RequestError(Exception):
    """A request the server refuses, with the gRPC status it maps to (REST maps that to HTTP as TF Serving does)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: Optional[int] = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status
