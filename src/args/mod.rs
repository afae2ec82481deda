//! Every program's command line as a clap definition, in the library so that tests, shell
//! completions and the man pages' checks read the same definitions the programs parse.
//!
//! Each module holds one program's `Cli` and its name `PROGRAM`; the program in `src/bin/`
//! parses argv with it and calls the library. [`commands`] lists them all, so a check over every
//! program's options is a loop, and a new program is one more line there.
//!
//! What is shared between programs (`-C`, `--queue-dir`, the selectors) lives in `cli`; the
//! sendmail spellings (`-qR...`, `-q30m`) are rewritten there before a definition sees them.

// The field and struct docs below are the programs' --help text, written for a terminal:
// `[::1]:25` and `<ADDRESS>` are what a user types, not links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use clap::CommandFactory;

pub mod etrn_send;
pub mod mailq;
pub mod mx_check;
pub mod odmr_fetch;
pub mod queue_admin;
pub mod queue_enqueue;
pub mod queue_run;
pub mod queue_smtpd;

/// Every program's clap command, by program name.
pub fn commands() -> Vec<clap::Command> {
    vec![
        queue_enqueue::Cli::command(),
        queue_run::Cli::command(),
        mailq::Cli::command(),
        etrn_send::Cli::command(),
        mx_check::Cli::command(),
        queue_smtpd::Cli::command(),
        odmr_fetch::Cli::command(),
        queue_admin::Cli::command(),
    ]
}

#[cfg(test)]
mod tests {
    /// clap checks a definition only when it is used; this catches clashing names at test time.
    #[test]
    fn every_definition_is_consistent() {
        for command in super::commands() {
            command.debug_assert();
        }
    }

    #[test]
    fn each_command_is_named_after_its_program() {
        let names: Vec<String> = super::commands()
            .iter()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                super::queue_enqueue::PROGRAM,
                super::queue_run::PROGRAM,
                super::mailq::PROGRAM,
                super::etrn_send::PROGRAM,
                super::mx_check::PROGRAM,
                super::queue_smtpd::PROGRAM,
                super::odmr_fetch::PROGRAM,
                super::queue_admin::PROGRAM,
            ]
        );
    }
}
