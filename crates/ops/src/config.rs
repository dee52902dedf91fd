//! The typed configuration: every option has a flag and an environment variable.
