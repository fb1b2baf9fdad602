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
