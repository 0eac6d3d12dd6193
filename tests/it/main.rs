//! Integration tests: the real `envctl` binary, run as a user would, in temporary git repositories with `HOME`,
//! the XDG directories and `ENVCTL_RUNTIME_DIR` redirected into the test's own directory.

mod attacks;
mod bad_config;
mod bundle;
mod config_cmd;
mod correctness;
mod dashboard;
mod databases;
mod direct_exec;
mod doctor;
mod fuzz;
mod inspect;
mod job_server;
mod jobs;
mod legacy;
mod lifecycle;
mod projects;
mod realproject;
mod requirements;
mod runtime_api;
mod support;
mod trust;
mod zombies;
