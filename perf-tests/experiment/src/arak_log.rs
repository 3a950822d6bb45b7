//! Reads `arak run`'s JSON log (`--log-format json`): one `decision` line per round, whose
//! `action` says whether the round applied a change, and whose hold reason says whether it
//! held on a calibrated model or because it could not decide yet.

use serde_json::Value;

/// What one round did, as far as the warm-up and the measured window care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// It changed the control plane, or tried to (a roll, finished, undone or cut short).
    Applied,
    /// It decided on a calibrated model that nothing should change: the recommendation is
    /// the running setting, or saves less than the deadband.
    Settled,
    /// It could not decide yet (no data, a model on priors only, an error): not convergence.
    NotReady,
}

/// Hold reasons (recommender/src/safety.rs) of a round that decided to keep what runs: the
/// recommendation is the running setting, saves less than the deadband, or nothing within
/// the bounds does better. Holds for confidence, settling or data are not decisions to keep.
const SETTLED_HOLDS: [&str; 3] = ["current ones", "deadband", "no setting within the bounds"];

/// The round a log line records, None for any other line.
pub fn round(line: &str) -> Option<Round> {
    let json: Value = serde_json::from_str(line).ok()?;
    if json["message"] != "decision" {
        return None;
    }
    let reason = json["reason"].as_str().unwrap_or("");
    Some(match json["action"].as_str().unwrap_or("") {
        "applied" | "rolled-back" | "interrupted" | "recovered" => Round::Applied,
        "unchanged" => Round::Settled,
        // A round holds for every reason it lists ("; "-joined): all must be settled ones.
        "hold"
            if reason
                .split("; ")
                .all(|r| SETTLED_HOLDS.iter().any(|h| r.contains(h))) =>
        {
            Round::Settled
        }
        _ => Round::NotReady,
    })
}

/// The log's decision lines, in order.
pub fn decisions(log: &str) -> Vec<&str> {
    log.lines().filter(|l| round(l).is_some()).collect()
}

/// Converged: the last `rounds` rounds all settled (that many consecutive rounds without an
/// apply, on a calibrated model; at least two).
pub fn converged(decisions: &[&str], rounds: usize) -> bool {
    let rounds = rounds.max(2);
    decisions.len() >= rounds
        && decisions[decisions.len() - rounds..]
            .iter()
            .all(|l| round(l) == Some(Round::Settled))
}

/// The decisions that applied something.
pub fn applies<'a>(decisions: &[&'a str]) -> Vec<&'a str> {
    decisions
        .iter()
        .copied()
        .filter(|l| round(l) == Some(Round::Applied))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(action: &str, reason: &str) -> String {
        serde_json::json!({"timestamp": "2026-12-07T12:00:00Z", "level": "INFO", "message": "decision",
            "tuning": "control-plane", "mode": "Auto", "action": action, "reason": reason,
            "target": "arak::controller::reconcile"})
        .to_string()
    }

    #[test]
    fn rounds_are_classified_by_action_and_hold_reason() {
        assert_eq!(round(&line("applied", "rolled 3")), Some(Round::Applied));
        assert_eq!(round(&line("rolled-back", "x")), Some(Round::Applied));
        assert_eq!(
            round(&line("unchanged", "already in effect")),
            Some(Round::Settled)
        );
        assert_eq!(
            round(&line("hold", "saving 2% is inside the deadband of 5%")),
            Some(Round::Settled)
        );
        assert_eq!(
            round(&line("hold", "confidence Low is below the policy's Medium")),
            Some(Round::NotReady)
        );
        assert_eq!(
            round(&line(
                "hold",
                "confidence Low is below the policy's Medium; the recommended settings are the current ones"
            )),
            Some(Round::NotReady)
        );
        assert_eq!(
            round(&line("error", "Prometheus down")),
            Some(Round::NotReady)
        );
        assert_eq!(
            round(r#"{"message":"rolling","action":"applied"}"#),
            None,
            "only decision lines count"
        );
        assert_eq!(round("not json"), None);
    }

    #[test]
    fn convergence_needs_the_asked_settled_rounds_in_a_row() {
        let not_ready = line("hold", "no request rates for apiserver `a`");
        let applied = line("applied", "roll");
        let settled = line("hold", "the recommended settings are the current ones");
        let other = r#"{"message":"fetched"}"#.to_owned();
        let log = |lines: &[&String]| {
            lines
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let cases: [(&[&String], usize, bool); 9] = [
            (&[], 2, false),
            (&[&settled], 2, false),
            (&[&settled], 1, false),
            (&[&not_ready, &not_ready], 2, false),
            (&[&applied, &settled], 2, false),
            (&[&applied, &settled, &other, &settled], 2, true),
            (&[&applied, &settled, &other, &settled], 3, false),
            (&[&settled, &applied, &settled, &settled, &settled], 3, true),
            (&[&settled, &settled, &applied], 2, false),
        ];
        for (lines, rounds, expected) in cases {
            let text = log(lines);
            assert_eq!(converged(&decisions(&text), rounds), expected, "{text}");
        }
        let text = log(&[&not_ready, &applied, &settled, &applied]);
        assert_eq!(applies(&decisions(&text)).len(), 2);
    }
}
