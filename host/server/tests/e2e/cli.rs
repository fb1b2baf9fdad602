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
