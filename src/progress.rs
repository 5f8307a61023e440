//! Progress reporting for long work (pull, build, push): indicatif bars on a terminal, plain log lines
//! otherwise, nothing with `-q`.
