# envctl's runtime API for shell jobs: source it, then call the functions below. Each wraps `envctl job`
# (which reads ENVCTL_RUNTIME_URL, ENVCTL_EXECUTION_ID and ENVCTL_EXECUTION_TOKEN and retries connection errors)
# and returns its exit status: 0 done, 1 error, 3 not found.
#
#   . "$ENVCTL_HELPERS_DIR/envctl_job.sh"
#   n=$(envctl_input)
#   envctl_var_incr runs
#   envctl_output '{"done": true}'

_envctl_job() { "${ENVCTL_BIN:-envctl}" job "$@"; }

envctl_input() { _envctl_job input; }
envctl_output() { _envctl_job output "$1"; }
envctl_context() { _envctl_job context; }
envctl_condition() { _envctl_job condition "$1"; }
envctl_var_get() { _envctl_job var get "$@"; }
envctl_var_set() { _envctl_job var set "$@"; }
envctl_var_incr() { _envctl_job var incr "$@"; }
envctl_var_exists() { _envctl_job var exists "$@"; }
envctl_var_delete() { _envctl_job var delete "$@"; }
envctl_progress() { _envctl_job progress "$@"; }
envctl_log() { _envctl_job log "$*"; }
