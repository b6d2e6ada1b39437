"""Errors the sandbox answers with, shaped like Tencent Cloud API 3.0 errors."""


class ApiError(Exception):
    """A Tencent Cloud API error: returned as HTTP 200 with `Response.Error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


def not_found(code: str, what: str, ident: str) -> ApiError:
    return ApiError(code, f"The {what} `{ident}` does not exist.")


def invalid_value(name: str, value: object, why: str = "") -> ApiError:
    suffix = f": {why}" if why else "."
    return ApiError("InvalidParameterValue", f"The value `{value}` of parameter `{name}` is not valid{suffix}")
