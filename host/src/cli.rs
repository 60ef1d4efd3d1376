//! The command line of the `pier` binary. The settings flags of `serve` are
//! the library's [`Settings`] and [`ListenerSettings`], the same structs
//! pier.toml is read into; their defaults are shown from the library's.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pier::config::{ListenerSettings, Settings};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "pier", version, about = "A TCP server whose protocol handlers are sandboxed WebAssembly components")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object per line, with the connection's listener, id and peer) for a
    /// log pipeline.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve a handler component on a TCP listener, or every listener of a
    /// config file.
    Serve(Box<ServeArgs>),
    /// Validate a handler component (and print its world, imports and
    /// exports) or a whole config file (and print its listeners), binding
    /// nothing but loading and instantiating each handler as `serve` would.
    Check {
        /// The component (.wasm) to check.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        plugin: Option<PathBuf>,
        /// A pier.toml whose every listener to check.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Serve every listener of this config file (pier.toml) instead of the
    /// one listener the flags describe. A listener setting given as a flag
    /// too overrides the file's for every listener; so do --grace and
    /// --workers for the file's top level.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub server: Settings,
    #[command(flatten)]
    pub listener: ListenerSettings,
}

/// Flags that name one listener, so that they make no sense with a file of
/// many.
const IDENTITY: [&str; 4] = ["name", "listen", "port_range", "plugin"];

impl Cli {
    /// Parses the command line; exits with clap's usage error if it is bad.
    pub fn parse_args() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The command, with `serve`'s identity flags kept apart from
    /// `--config` and each setting's default appended to its help.
    pub fn command_with_defaults() -> clap::Command {
        let defaults = pier::config::settings::defaults();
        Self::command().mut_subcommand("serve", |mut serve| {
            for id in IDENTITY {
                serve = serve.mut_arg(id, |a| a.conflicts_with("config"));
            }
            serve = serve.mut_arg("plugin", |a| a.required_unless_present("config"));
            let ids: Vec<String> = serve.get_arguments().map(|a| a.get_id().to_string()).collect();
            for id in ids {
                if let Some(default) = defaults.get(&id.replace('_', "-")) {
                    serve = serve.mut_arg(id, |a| {
                        let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                        a.help(format!("{help} [default: {default}]"))
                    });
                }
            }
            serve
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command_with_defaults().debug_assert();
    }

    #[test]
    fn help_shows_each_default_once() {
        let cmd = Cli::command_with_defaults();
        let serve = cmd.find_subcommand("serve").unwrap();
        let help_of = |id: &str| {
            let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_help().map(ToString::to_string).unwrap_or_default()
        };
        for arg in serve.get_arguments() {
            let help = help_of(arg.get_id().as_str());
            assert!(help.matches("[default: ").count() <= 1, "{help}");
        }
        assert!(help_of("memory_limit").ends_with("[default: 64MiB]"));
        assert!(help_of("cpu_limit").ends_with("[default: 1s]"));
        assert!(help_of("name").ends_with("[default: main]"));
    }
}
