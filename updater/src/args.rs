//! Edits a container's command line: only the flags arak owns change; every other token,
//! its order and its form (`--flag=value` or `--flag value`, in `command` or `args`) stay.

use serde::{Deserialize, Serialize};

/// The flags arak sets. Anything else on a command line belongs to whoever wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnedFlag {
    MaxRequestsInflight,
    MaxMutatingRequestsInflight,
    KubeApiQps,
    KubeApiBurst,
}

impl OwnedFlag {
    pub const ALL: [OwnedFlag; 4] = [
        OwnedFlag::MaxRequestsInflight,
        OwnedFlag::MaxMutatingRequestsInflight,
        OwnedFlag::KubeApiQps,
        OwnedFlag::KubeApiBurst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OwnedFlag::MaxRequestsInflight => "--max-requests-inflight",
            OwnedFlag::MaxMutatingRequestsInflight => "--max-mutating-requests-inflight",
            OwnedFlag::KubeApiQps => "--kube-api-qps",
            OwnedFlag::KubeApiBurst => "--kube-api-burst",
        }
    }
}

/// The flag that points a kube-scheduler at its KubeSchedulerConfiguration file.
pub const CONFIG_FLAG: &str = "--config";

/// A container's `command` and `args`, which the runtime concatenates into one argv.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLine {
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
}

/// Where one occurrence of a flag sits in the concatenated argv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occurrence {
    /// `--flag=value` at this index.
    Inline(usize),
    /// `--flag` at this index, its value in the next token.
    Separate(usize),
    /// `--flag` as the last token, with no value.
    Dangling(usize),
}

impl CommandLine {
    pub fn new(command: Vec<String>, args: Vec<String>) -> Self {
        Self { command, args }
    }

    /// The flag's value as the component sees it: pflag lets the last occurrence win.
    pub fn value(&self, flag: &str) -> Option<String> {
        let argv = self.argv();
        occurrences(&argv, flag)
            .last()
            .and_then(|occurrence| match *occurrence {
                Occurrence::Inline(i) => argv[i].split_once('=').map(|(_, v)| v.to_owned()),
                Occurrence::Separate(i) => Some(argv[i + 1].clone()),
                Occurrence::Dangling(_) => None,
            })
    }

    /// This command line with `flag` set to `value`: every occurrence keeps its place and
    /// form; a flag not present yet is appended to `args` (before a `--`, if any).
    pub fn with_flag(&self, flag: &str, value: &str) -> CommandLine {
        let mut argv = self.argv();
        let mut command_len = self.command.len();
        let found = occurrences(&argv, flag);
        if found.is_empty() {
            let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
            argv.insert(at, format!("{flag}={value}"));
            if at < command_len {
                command_len += 1;
            }
        }
        for occurrence in found {
            match occurrence {
                Occurrence::Inline(i) | Occurrence::Dangling(i) => {
                    argv[i] = format!("{flag}={value}")
                }
                Occurrence::Separate(i) => argv[i + 1] = value.to_owned(),
            }
        }
        let args = argv.split_off(command_len);
        CommandLine {
            command: argv,
            args,
        }
    }

    fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// Occurrences of `flag` before any `--` (after it everything is positional).
fn occurrences(argv: &[String], flag: &str) -> Vec<Occurrence> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let token = &argv[i];
        if token == "--" {
            break;
        }
        if token == flag {
            if i + 1 < argv.len() {
                found.push(Occurrence::Separate(i));
                // The next token is this flag's value, never a flag of its own.
                i += 1;
            } else {
                found.push(Occurrence::Dangling(i));
            }
        } else if token
            .strip_prefix(flag)
            .is_some_and(|rest| rest.starts_with('='))
        {
            found.push(Occurrence::Inline(i));
        }
        i += 1;
    }
    found
}

/// A value as arak writes it: integers without a fraction, `50` rather than `50.0`.
pub fn format_number(value: f64) -> String {
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(command: &[&str], args: &[&str]) -> CommandLine {
        CommandLine::new(
            command.iter().map(|s| s.to_string()).collect(),
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    const INFLIGHT: &str = "--max-requests-inflight";

    #[test]
    fn replaces_inline_form_in_args() {
        let before = line(
            &["/bin/kube-apiserver"],
            &["--v=1", "--max-requests-inflight=400", "--profiling=false"],
        );
        let after = before.with_flag(INFLIGHT, "600");
        assert_eq!(
            after,
            line(
                &["/bin/kube-apiserver"],
                &["--v=1", "--max-requests-inflight=600", "--profiling=false"]
            )
        );
        assert_eq!(after.value(INFLIGHT).as_deref(), Some("600"));
    }

    #[test]
    fn replaces_separate_form_in_command() {
        let before = line(
            &[
                "kube-apiserver",
                "--max-requests-inflight",
                "400",
                "--v",
                "2",
            ],
            &["--profiling=false"],
        );
        let after = before.with_flag(INFLIGHT, "10");
        assert_eq!(
            after,
            line(
                &[
                    "kube-apiserver",
                    "--max-requests-inflight",
                    "10",
                    "--v",
                    "2"
                ],
                &["--profiling=false"]
            )
        );
    }

    #[test]
    fn separate_form_across_command_and_args() {
        let before = line(
            &["kube-apiserver", "--max-requests-inflight"],
            &["400", "--v=1"],
        );
        assert_eq!(before.value(INFLIGHT).as_deref(), Some("400"));
        let after = before.with_flag(INFLIGHT, "500");
        assert_eq!(
            after,
            line(
                &["kube-apiserver", "--max-requests-inflight"],
                &["500", "--v=1"]
            )
        );
    }

    #[test]
    fn absent_flag_is_appended_to_args() {
        let before = line(&["kube-apiserver"], &["--v=1"]);
        assert_eq!(before.value(INFLIGHT), None);
        let after = before.with_flag(INFLIGHT, "400");
        assert_eq!(
            after,
            line(
                &["kube-apiserver"],
                &["--v=1", "--max-requests-inflight=400"]
            )
        );
    }

    #[test]
    fn absent_flag_goes_before_the_terminator() {
        let before = line(&["kube-apiserver", "--v=1", "--", "x"], &[]);
        let after = before.with_flag(INFLIGHT, "7");
        assert_eq!(
            after,
            line(
                &[
                    "kube-apiserver",
                    "--v=1",
                    "--max-requests-inflight=7",
                    "--",
                    "x"
                ],
                &[]
            )
        );
        let before = line(
            &["kube-apiserver"],
            &["--v=1", "--", "--max-requests-inflight=1"],
        );
        assert_eq!(before.value(INFLIGHT), None, "after -- it is positional");
        let after = before.with_flag(INFLIGHT, "7");
        assert_eq!(
            after.args,
            vec![
                "--v=1",
                "--max-requests-inflight=7",
                "--",
                "--max-requests-inflight=1"
            ]
        );
    }

    #[test]
    fn last_occurrence_wins_and_all_are_changed() {
        let before = line(
            &[],
            &["--max-requests-inflight=1", "--max-requests-inflight", "2"],
        );
        assert_eq!(before.value(INFLIGHT).as_deref(), Some("2"));
        let after = before.with_flag(INFLIGHT, "3");
        assert_eq!(
            after.args,
            vec!["--max-requests-inflight=3", "--max-requests-inflight", "3"]
        );
    }

    #[test]
    fn a_longer_flag_with_the_same_prefix_is_not_ours() {
        let before = line(&[], &["--max-requests-inflight-extra=9"]);
        assert_eq!(before.value(INFLIGHT), None);
        let before = line(&[], &["--kube-api-qps-x", "5", "--kube-api-qps=20"]);
        assert_eq!(before.value("--kube-api-qps").as_deref(), Some("20"));
        assert_eq!(
            before.with_flag("--kube-api-qps", "30").args,
            vec!["--kube-api-qps-x", "5", "--kube-api-qps=30"]
        );
    }

    #[test]
    fn dangling_flag_gets_an_inline_value() {
        let before = line(&["kube-apiserver"], &["--max-requests-inflight"]);
        assert_eq!(before.value(INFLIGHT), None);
        assert_eq!(
            before.with_flag(INFLIGHT, "5").args,
            vec!["--max-requests-inflight=5"]
        );
    }

    #[test]
    fn numbers_are_written_without_a_needless_fraction() {
        assert_eq!(format_number(50.0), "50");
        assert_eq!(format_number(12.5), "12.5");
    }

    /// One token group on a generated command line.
    #[derive(Debug, Clone)]
    enum Group {
        Other(Vec<String>),
        Owned { separate: bool, value: u32 },
    }

    fn other_group() -> impl Strategy<Value = Group> {
        let name = prop::sample::select(vec![
            "--v",
            "--profiling",
            "--bind-address",
            "--max-requests",
            "--kube-api-qps-extra",
            "--etcd-servers",
        ]);
        (name, "[a-z0-9.:/]{0,8}", 0..3u8).prop_map(|(name, value, form)| {
            Group::Other(match form {
                0 => vec![format!("{name}={value}")],
                1 => vec![name.to_owned(), format!("x{value}")],
                _ => vec![name.to_owned() + "-flag"],
            })
        })
    }

    fn groups() -> impl Strategy<Value = Vec<Group>> {
        let owned = (any::<bool>(), 0..10_000u32)
            .prop_map(|(separate, value)| Group::Owned { separate, value });
        prop::collection::vec(prop_oneof![4 => other_group(), 1 => owned], 0..12)
    }

    /// Splits the generated tokens into command and args at a group boundary or inside one.
    fn command_line() -> impl Strategy<Value = CommandLine> {
        (groups(), any::<prop::sample::Index>()).prop_map(|(groups, split)| {
            let mut argv = vec!["/bin/component".to_owned()];
            for group in groups {
                match group {
                    Group::Other(tokens) => argv.extend(tokens),
                    Group::Owned {
                        separate: true,
                        value,
                    } => {
                        argv.push(INFLIGHT.to_owned());
                        argv.push(value.to_string());
                    }
                    Group::Owned {
                        separate: false,
                        value,
                    } => argv.push(format!("{INFLIGHT}={value}")),
                }
            }
            let at = 1 + split.index(argv.len());
            let args = argv.split_off(at.min(argv.len()));
            CommandLine::new(argv, args)
        })
    }

    /// Tokens that are neither our flag nor its value, with which list they sit in.
    fn foreign_tokens(line: &CommandLine) -> (Vec<String>, Vec<String>) {
        let argv = line.argv();
        let mut ours = vec![false; argv.len()];
        for occurrence in occurrences(&argv, INFLIGHT) {
            match occurrence {
                Occurrence::Inline(i) | Occurrence::Dangling(i) => ours[i] = true,
                Occurrence::Separate(i) => {
                    ours[i] = true;
                    ours[i + 1] = true;
                }
            }
        }
        let keep = |range: std::ops::Range<usize>| {
            range
                .filter(|&i| !ours[i])
                .map(|i| argv[i].clone())
                .collect::<Vec<_>>()
        };
        (
            keep(0..line.command.len()),
            keep(line.command.len()..argv.len()),
        )
    }

    proptest! {
        #[test]
        fn the_new_value_is_what_the_component_sees(line in command_line(), value in 0..100_000u32) {
            let value = value.to_string();
            prop_assert_eq!(line.with_flag(INFLIGHT, &value).value(INFLIGHT), Some(value));
        }

        #[test]
        fn every_other_token_keeps_its_place(line in command_line(), value in 0..100_000u32) {
            let after = line.with_flag(INFLIGHT, &value.to_string());
            prop_assert_eq!(foreign_tokens(&after), foreign_tokens(&line));
        }

        #[test]
        fn a_present_flag_keeps_its_form(line in command_line(), value in 0..100_000u32) {
            prop_assume!(line.value(INFLIGHT).is_some());
            let after = line.with_flag(INFLIGHT, &value.to_string());
            prop_assert_eq!(after.command.len(), line.command.len());
            prop_assert_eq!(after.args.len(), line.args.len());
        }

        #[test]
        fn setting_twice_changes_nothing_more(line in command_line(), value in 0..100_000u32) {
            let value = value.to_string();
            let once = line.with_flag(INFLIGHT, &value);
            prop_assert_eq!(once.with_flag(INFLIGHT, &value), once.clone());
        }

        #[test]
        fn setting_back_restores_the_original(line in command_line(), value in 0..100_000u32) {
            let Some(old) = line.value(INFLIGHT) else { return Ok(()) };
            // With several occurrences only the last one's value comes back everywhere.
            let occurrences_agree = occurrences(&line.argv(), INFLIGHT).len() == 1;
            prop_assume!(occurrences_agree);
            let there_and_back = line.with_flag(INFLIGHT, &value.to_string()).with_flag(INFLIGHT, &old);
            prop_assert_eq!(there_and_back, line);
        }
    }
}
