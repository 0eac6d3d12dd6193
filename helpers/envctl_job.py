"""envctl's runtime API for Python jobs (standard library only).

A job envctl runs gets ENVCTL_RUNTIME_URL, ENVCTL_EXECUTION_ID and ENVCTL_EXECUTION_TOKEN; this module reads
them. Import it from the directory envctl names in ENVCTL_HELPERS_DIR:

    import os, sys
    sys.path.insert(0, os.environ["ENVCTL_HELPERS_DIR"])
    import envctl_job

    n = envctl_job.input()["n"]
    envctl_job.output({"double": 2 * n})
    envctl_job.incr("runs")

A service envctl starts gets ENVCTL_RUNTIME_URL and ENVCTL_SERVICE_TOKEN and may call enqueue(), job() and
cancel() for its own target. Connection errors and 503 (the store not open yet) are retried with backoff; every other failure raises an
ApiError subclass (NotFound for a missing variable or job).
"""

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = [
    "ApiError", "Unauthorized", "Forbidden", "NotFound", "BadRequest", "Unavailable",
    "input", "output", "context", "condition", "get_var", "set_var", "incr", "exists", "delete_var",
    "progress", "log", "enqueue", "job", "cancel",
]

RETRIES = 5


class ApiError(Exception):
    """The runtime API refused a call (or could not be reached)."""

    def __init__(self, status, message):
        super().__init__(f"envctl runtime API: {status}: {message}")
        self.status = status
        self.message = message


class BadRequest(ApiError):
    """400: the call's body or arguments are wrong."""


class Unauthorized(ApiError):
    """401: no token, or a forged, expired or revoked one (the attempt has ended)."""


class Forbidden(ApiError):
    """403: the token does not cover this call."""


class NotFound(ApiError):
    """404: no such variable or job."""


class Unavailable(ApiError):
    """503 or no answer: the API could not serve the call."""


_ERRORS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 503: Unavailable}


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise ApiError(0, f"{name} is not set: this runs outside an envctl job")
    return value


def _token():
    return os.environ.get("ENVCTL_EXECUTION_TOKEN") or _env("ENVCTL_SERVICE_TOKEN")


def _call(method, path, body=None, query=None):
    url = _env("ENVCTL_RUNTIME_URL") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", "Bearer " + _token())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    pause = 0.05
    for attempt in range(RETRIES + 1):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            if e.code == 503 and attempt < RETRIES:
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            try:
                message = json.loads(e.read().decode()).get("error", e.reason)
            except ValueError:
                message = e.reason
            raise _ERRORS.get(e.code, ApiError)(e.code, message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            if attempt == RETRIES:
                raise Unavailable(0, f"cannot reach {url}: {e}") from None
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    return None


def _execution(path):
    return "/executions/" + urllib.parse.quote(_env("ENVCTL_EXECUTION_ID"), safe="") + path


def _var(key):
    return _execution("/variables/" + urllib.parse.quote(key, safe=""))


def _scope(target):
    return {"target": target} if target else None


def input():  # noqa: A001 - the API's name for it
    """The job's input (`jobs enqueue --input`), or None."""
    return _call("GET", _execution("/input"))


def output(value):
    """Records the job's output on its record; the jobs after it read it in their context."""
    _call("POST", _execution("/output"), value)


def context():
    """The job, target, attempt, repository, worker and the parents' outputs."""
    return _call("GET", _execution("/context"))


def condition(value):
    """Whether the jobs after this one may run."""
    _call("POST", _execution("/condition"), {"condition": bool(value)})


def get_var(key, target=None, default=None):
    """A variable's value; `default` when it does not exist."""
    try:
        return _call("GET", _var(key), query=_scope(target))["value"]
    except NotFound:
        return default


def set_var(key, value, target=None):
    """Sets a variable (its value is kept as text)."""
    _call("PUT", _var(key), {"value": str(value)}, query=_scope(target))


def incr(key, by=1, target=None):
    """Adds `by` atomically and returns the new value."""
    return int(_call("POST", _var(key) + "/incr", {"by": by}, query=_scope(target))["value"])


def exists(key, target=None):
    """Whether a variable exists."""
    try:
        _call("GET", _var(key), query=_scope(target))
        return True
    except NotFound:
        return False


def delete_var(key, target=None):
    """Deletes a variable; returns whether it existed."""
    try:
        _call("DELETE", _var(key), query=_scope(target))
        return True
    except NotFound:
        return False


def progress(percent=None, step=None, detail=None):
    """Reports progress (`jobs show` shows it while the job runs)."""
    _call("POST", _execution("/progress"), {"percent": percent, "step": step, "detail": detail})


def log(message):
    """Adds a line to the job's log."""
    _call("POST", _execution("/logs"), {"message": str(message)})


def enqueue(job_type, payload=None, target=None, input=None, priority=None, after=None):  # noqa: A002
    """Queues a job (from a service: for its own target) and returns its id."""
    body = {"type": job_type, "payload": payload, "target": target, "input": input, "priority": priority,
            "after": list(after or [])}
    return _call("POST", "/jobs", {k: v for k, v in body.items() if v is not None})["id"]


def job(job_id):
    """A job's record (status, progress, output, ...)."""
    return _call("GET", "/jobs/" + urllib.parse.quote(job_id, safe=""))


def cancel(job_id):
    """Cancels a job; returns its status now."""
    return _call("POST", "/jobs/" + urllib.parse.quote(job_id, safe="") + "/cancel")["status"]
