//! Kubernetes' `$(VAR)` expansion of container command, args and env values.
//!
//! `$(NAME)` becomes the value of NAME when it is defined and stays as written when it is
//! not; `$$` is an escaped `$`; any other `$` is literal.

/// Expands `$(NAME)` references in `input` with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(close) => {
                    let name = &reference[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &reference[close + 1..];
                }
                None => {
                    // An unterminated reference is kept literally.
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Looks a name up in an ordered list of (name, value) pairs; the last definition wins,
/// as with duplicate env entries in a container.
pub fn lookup_in<'a>(vars: &'a [(String, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        vec![
            ("POD_IP".into(), "127.0.1.2".into()),
            ("PORT".into(), "6443".into()),
            ("EMPTY".into(), String::new()),
        ]
    }

    fn ex(s: &str) -> String {
        let v = vars();
        expand(s, lookup_in(&v))
    }

    #[test]
    fn replaces_defined_references() {
        assert_eq!(ex("--bind-address=$(POD_IP)"), "--bind-address=127.0.1.2");
        assert_eq!(ex("$(POD_IP):$(PORT)"), "127.0.1.2:6443");
        assert_eq!(ex("x$(EMPTY)y"), "xy");
    }

    #[test]
    fn keeps_undefined_references() {
        assert_eq!(ex("$(NOPE)"), "$(NOPE)");
        assert_eq!(ex("a-$(NOPE)-$(PORT)"), "a-$(NOPE)-6443");
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(ex("$$(POD_IP)"), "$(POD_IP)");
        assert_eq!(ex("$$$(PORT)"), "$6443");
        assert_eq!(ex("cost: $$5"), "cost: $5");
    }

    #[test]
    fn lone_and_unterminated_dollars_are_literal() {
        assert_eq!(ex("$"), "$");
        assert_eq!(ex("a$b"), "a$b");
        assert_eq!(ex("$(POD_IP"), "$(POD_IP");
        assert_eq!(ex("end$"), "end$");
        assert_eq!(ex("$()"), "$()");
    }

    #[test]
    fn no_recursive_expansion() {
        let v = vec![
            ("A".to_string(), "$(B)".to_string()),
            ("B".into(), "b".into()),
        ];
        assert_eq!(expand("$(A)", lookup_in(&v)), "$(B)");
    }

    #[test]
    fn last_definition_wins() {
        let v = vec![("A".to_string(), "1".to_string()), ("A".into(), "2".into())];
        assert_eq!(expand("$(A)", lookup_in(&v)), "2");
    }
}
