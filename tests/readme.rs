//! The README's configuration reference is generated from the command line itself, so it cannot
//! drift: this test fails when they differ, and `UPDATE_README=1 cargo test --test readme` rewrites it.

use clap::CommandFactory;
use scoped_secrets::cli::Cli;

const BEGIN: &str = "<!-- configuration reference: generated from the CLI by tests/readme.rs -->";
const END: &str = "<!-- end of configuration reference -->";

fn reference() -> String {
    let cli = Cli::command();
    let mut out = String::new();
    for sub in cli.get_subcommands() {
        out.push_str(&format!(
            "\n`scoped-secrets {}`: {}\n\n| flag | environment variable | default | meaning |\n|---|---|---|---|\n",
            sub.get_name(),
            sub.get_about().map(|a| a.to_string()).unwrap_or_default()
        ));
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_long().is_some())
        {
            let long = arg.get_long().unwrap_or_default();
            let flag = match arg.get_short() {
                Some(short) => format!("`-{short}`, `--{long}`"),
                None => format!("`--{long}`"),
            };
            let env = arg
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if defaults.is_empty() {
                String::new()
            } else {
                format!("`{}`", defaults.join(","))
            };
            let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("`{}`", v.get_name()))
                .collect();
            if !values.is_empty() && !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                help = format!(
                    "{}; one of {}",
                    help.trim_end_matches('.'),
                    values.join(", ")
                );
            }
            out.push_str(&format!("| {flag} | {env} | {default} | {help} |\n"));
        }
    }
    out
}

#[test]
fn readme_configuration_reference_matches_the_cli() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md lacks the markers {BEGIN:?} … {END:?}");
    };
    let current = &readme[start + BEGIN.len()..end];
    let expected = format!("{}\n", reference());
    if current != expected {
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!(
                "{}{expected}{}",
                &readme[..start + BEGIN.len()],
                &readme[end..]
            );
            std::fs::write(path, updated).expect("writing README.md");
        } else {
            panic!(
                "README.md's configuration reference is out of date; run `UPDATE_README=1 cargo test --test readme`.\nExpected:\n{expected}"
            );
        }
    }
}
