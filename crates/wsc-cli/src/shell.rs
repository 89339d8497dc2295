//! `wsc completions` and `wsc man`: shell completion scripts and man pages generated from the
//! clap definition, so that they always list the flags the binary takes.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use clap_complete::Shell;

use crate::Failure;

/// `wsc completions SHELL`.
#[derive(Args, Debug)]
pub struct CompletionsOpts {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `wsc man [--out DIR]`.
#[derive(Args, Debug)]
pub struct ManOpts {
    /// Write wsc.1 and a page per subcommand (wsc-serve.1, …) into DIR instead of printing wsc.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script of `cmd` for `o.shell` on stdout.
pub fn completions(o: &CompletionsOpts, mut cmd: clap::Command) -> Result<(), Failure> {
    // Rendered into memory first: the generators panic on a failed write, and a closed stdout
    // (`wsc completions bash | head`) must end with an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(o.shell, &mut cmd, "wsc", &mut script);
    print(&script)
}

/// Prints the man page of `cmd` on stdout, or writes a page per command into `o.out`.
pub fn man(o: &ManOpts, cmd: clap::Command) -> Result<(), Failure> {
    // The page's title line carries the bare version; `wsc --version` adds the capabilities.
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    match &o.out {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cmd, dir))
            .map_err(|e| {
                Failure::new(
                    1,
                    format!("cannot write the man pages to {}: {e}", dir.display()),
                )
            }),
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(|e| Failure::new(1, format!("cannot render the man page: {e}")))?;
            print(&page)
        }
    }
}

fn print(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(1, format!("cannot write to stdout: {e}")))
}
