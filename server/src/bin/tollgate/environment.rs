//! clap names the flag of a value it refuses even when the value came from the flag's
//! environment variable (`--port` for `PORT=notaport`); the operator set the variable, so
//! the error names that.

use std::ffi::OsStr;

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::Cli;

/// `error`, naming the environment variable instead of the flag when the refused value
/// came from it: the flag is not on the command line and the variable holds the value.
pub(crate) fn naming_the_variable(mut error: clap::Error) -> clap::Error {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    let (flag, value) = (flag.clone(), value.clone());
    let mut command = Cli::command();
    command.build();
    let Some(arg) = command
        .get_subcommands()
        .flat_map(|subcommand| subcommand.get_arguments())
        .find(|arg| arg.to_string() == flag)
    else {
        return error;
    };
    let (Some(variable), Some(long)) = (arg.get_env(), arg.get_long()) else {
        return error;
    };
    let long = format!("--{long}");
    let on_command_line = std::env::args_os().skip(1).any(|given| {
        given == OsStr::new(&long)
            || given
                .to_str()
                .is_some_and(|given| given.starts_with(&format!("{long}=")))
    });
    if on_command_line || std::env::var_os(variable).as_deref() != Some(OsStr::new(&value)) {
        return error;
    }
    let variable = variable.to_string_lossy().into_owned();
    error.insert(ContextKind::InvalidArg, ContextValue::String(variable));
    error
}
