//! Shell integration through the binary: completion scripts, man pages, `--version`.

use std::process::{Command, Stdio};
use std::time::Duration;

fn run(args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("wsc")
        .unwrap()
        .args(args)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "wsc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completion_lists_subcommands_and_flags_and_parses() {
    let script = stdout_of(&["completions", "bash"]);
    for word in [
        "serve",
        "forward",
        "bench",
        "completions",
        "man",
        "--proxy",
        "--compress",
        "--one-message",
        "--broadcast",
    ] {
        assert!(script.contains(word), "no {word} in the bash script");
    }
    assert!(
        script.contains("complete -F"),
        "not a bash completion script"
    );
    // `bash -n` parses the script without running it.
    let path = std::env::temp_dir().join(format!("wsc-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let status = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "bash -n rejected the completion script");
}

#[test]
fn every_shell_gets_its_own_script() {
    for (shell, marker) in [
        ("zsh", "#compdef wsc"),
        ("fish", "complete -c wsc"),
        ("elvish", "edit:completion:arg-completer[wsc]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no {marker}");
        assert!(script.contains("serve"), "{shell}: no serve subcommand");
    }
}

#[test]
fn unknown_shell_is_bad_usage() {
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn man_page_is_roff_with_flags_and_subcommands() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH wsc 1"), "no .TH title line");
    assert!(page.contains(&format!("wsc {}", env!("CARGO_PKG_VERSION"))));
    assert!(page.contains(".SH NAME") && page.contains(".SH OPTIONS"));
    // roff escapes each '-' of a flag.
    for flag in [
        r"\-\-proxy",
        r"\-\-header",
        r"\-\-compress",
        r"\-\-max\-message\-size",
    ] {
        assert!(page.contains(flag), "no {flag} in the man page");
    }
    for sub in ["wsc\\-serve(1)", "wsc\\-forward(1)", "wsc\\-bench(1)"] {
        assert!(page.contains(sub), "no {sub} in the man page");
    }
}

#[test]
fn man_out_writes_a_page_per_command() {
    let dir = std::env::temp_dir().join(format!("wsc-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let nested = dir.join("man1");
    let out = run(&["man", "--out", nested.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    for name in ["wsc.1", "wsc-serve.1", "wsc-forward.1", "wsc-bench.1"] {
        let page = std::fs::read_to_string(nested.join(name)).unwrap();
        assert!(page.contains(".TH "), "{name}: no .TH");
    }
    let serve = std::fs::read_to_string(nested.join("wsc-serve.1")).unwrap();
    assert!(
        serve.contains(r"\-\-broadcast"),
        "wsc-serve.1 lacks --broadcast"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_shows_the_version_and_the_features() {
    for flag in ["--version", "-V"] {
        let line = stdout_of(&[flag]);
        assert!(
            line.starts_with(&format!("wsc {} (", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
        for feature in ["rustls", "socks5", "permessage-deflate"] {
            assert!(line.contains(feature), "no {feature} in {line}");
        }
    }
}
