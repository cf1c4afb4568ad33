//! `ROWGUARD_CONFIG=path`: settings from a file of `NAME=value` lines (dotenv syntax: `#`
//! comments, quotes, `export` prefixes), using the same names as the environment. The
//! environment and the command line win over the file.

use std::ffi::OsString;

use clap::Command;

/// `args` with the file's settings added as flags, for the subcommand in `args[1]`. Every line
/// must name a setting of that subcommand; the message names the file and the line.
pub fn with_config_file(
    command: &Command,
    mut args: Vec<OsString>,
) -> Result<Vec<OsString>, String> {
    let Some(path) = std::env::var_os("ROWGUARD_CONFIG") else {
        return Ok(args);
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let Some(subcommand) = args.get(1).and_then(|a| a.to_str()).map(str::to_owned) else {
        return Ok(args);
    };
    let Some(sub) = command.find_subcommand(&subcommand) else {
        return Ok(args);
    };
    let entries =
        dotenvy::from_path_iter(&path).map_err(|e| format!("ROWGUARD_CONFIG {shown}: {e}"))?;
    for (number, entry) in entries.enumerate() {
        // The parser's message quotes the line, and everything after an unclosed quote: a
        // stray `"` printed every later line, passwords included.
        let (name, value) = entry.map_err(|e| {
            let problem = match e {
                dotenvy::Error::LineParse(_, at) => format!(
                    "cannot be read as NAME=value (at character {}; the line is not shown, it may hold a secret)",
                    at + 1
                ),
                other => other.to_string(),
            };
            format!("ROWGUARD_CONFIG {shown}, entry {}: {problem}", number + 1)
        })?;
        let arg = sub
            .get_arguments()
            .chain(command.get_arguments())
            .find(|a| a.get_env().is_some_and(|env| env == name.as_str()))
            .ok_or_else(|| {
                // A line of key material with `=` padding parses as a name: only something
                // that looks like a setting's name is shown.
                let looks_like_a_name = name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                let shown_name = if looks_like_a_name {
                    name.as_str()
                } else {
                    "its name (not shown: it is not a setting's name and may be a secret)"
                };
                format!(
                    "ROWGUARD_CONFIG {shown}, entry {}: {shown_name} is not a setting of `rowguard {subcommand}`",
                    number + 1
                )
            })?;
        // No setting takes more than one line: a value that does is an unclosed quote that
        // swallowed the lines after it (passwords included), and clap would quote it.
        if value.contains('\n') || value.contains('\r') {
            return Err(format!(
                "ROWGUARD_CONFIG {shown}, entry {}: {name}'s value spans several lines (an unclosed quote?); it is not shown",
                number + 1
            ));
        }
        let long = arg.get_long().unwrap_or_default();
        let given_on_command_line = args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
        });
        if std::env::var_os(&name).is_none() && !given_on_command_line {
            // Before a `--` the caller wrote, never after it: there it would be a positional
            // argument clap refuses, quoting the value.
            let at = args
                .iter()
                .position(|a| a.to_str() == Some("--"))
                .unwrap_or(args.len());
            args.insert(at, format!("--{long}={value}").into());
        }
    }
    Ok(args)
}
