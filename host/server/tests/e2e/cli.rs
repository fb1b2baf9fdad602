//! The command line: help that helps, and configuration files that round-trip.

use crate::support::run;

#[test]
fn help_names_every_command_and_option() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["standalone", "config"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, out, _) = run(&["standalone", "--help"]);
    assert_eq!(code, 0);
    for word in ["--config", "--data-dir", "--admin-listen", "--flush", "--log-level", "FERRYMQ_CONFIG"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, _, err) = run(&["standalone", "--flush", "maybe"]);
    assert_eq!(code, 2);
    assert!(err.contains("possible values: async, sync"), "{err}");
}

#[test]
fn plugin_subcommands_show_the_brokers_options_only_where_they_talk_to_one() {
    for local in ["keygen", "sign", "new", "build", "test"] {
        let (code, out, _) = run(&["plugin", local, "--help"]);
        assert_eq!(code, 0);
        assert!(!out.contains("--admin-addr") && !out.contains("--token"), "plugin {local}:\n{out}");
    }
    let (_, out, _) = run(&["plugin", "keygen", "--help"]);
    assert!(!out.contains("--json"), "{out}");
    for remote in ["push", "bindings", "dry-run"] {
        let (code, out, _) = run(&["plugin", remote, "--help"]);
        assert_eq!(code, 0);
        for option in ["--admin-addr", "FERRYMQ_ADMIN", "--token", "--json"] {
            assert!(out.contains(option), "plugin {remote} shows {option}:\n{out}");
        }
    }
    let (code, _, err) = run(&["plugin", "keygen", "--out", "/nonexistent/k", "--admin-addr", "127.0.0.1:1"]);
    assert!(code == 2 && err.contains("unexpected argument '--admin-addr'"), "keygen takes no broker address: {err}");
    // Before the subcommand, as existing scripts write it, the options are still taken.
    let (code, _, err) = run(&["plugin", "--admin-addr", "127.0.0.1:1", "--json", "bindings"]);
    assert!(
        code == 2 && err.contains("connect to 127.0.0.1:1"),
        "tried the address given before the subcommand: {err}"
    );
    let (code, _, err) = run(&["plugin", "--admin-addr", "127.0.0.1:2", "bindings", "--admin-addr", "127.0.0.1:1"]);
    assert!(code == 2 && err.contains("connect to 127.0.0.1:1"), "the subcommand's own wins: {err}");
}

#[test]
fn the_default_configuration_checks_clean() {
    let (code, defaults, _) = run(&["config", "default"]);
    assert_eq!(code, 0);
    assert!(defaults.contains("segment_bytes = 1073741824"), "{defaults}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ferrymq.toml");
    std::fs::write(&file, &defaults).expect("write");
    let (code, checked, err) = run(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(checked, defaults);
}

#[test]
fn config_check_shows_tokens_only_as_digests_and_refuses_an_open_api_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ferrymq.toml");
    let secret = "ops-token-0123456789";
    std::fs::write(
        &file,
        format!("[admin]\nlisten = \"0.0.0.0:8082\"\n[[admin.tokens]]\nprincipal = \"ops\"\ntoken = \"{secret}\"\nroles = [\"admin\"]\n"),
    )
    .expect("write");
    let (code, checked, err) = run(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{err}");
    assert!(!checked.contains(secret), "the token is printed: {checked}");
    // SHA-256 of the token, as `printf %s "$TOKEN" | sha256sum` prints it.
    let digest = "d51a4891ede9d7c8a89088e5f255d5852a7154ab4b92ad562614e8d0824bfc2b";
    assert!(checked.contains(&format!("token_sha256 = \"{digest}\"")), "{checked}");

    std::fs::write(&file, "[admin]\nlisten = \"0.0.0.0:8082\"\n").expect("write");
    let (code, _, err) = run(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2, "an open API beyond loopback is refused");
    assert!(err.contains("--insecure-admin"), "{err}");
}
