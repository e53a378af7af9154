//! Build checks in the spirit of BuildKit's (`docker build --check`): style
//! and correctness warnings that do not stop a build, under BuildKit's rule
//! names so `# check=skip=RuleName` and `# check=error=true` work as users
//! expect. Only rules that need no base image or build context live here.

use std::collections::BTreeSet;

use super::error::{Error, Position};
use super::instructions::{Command, Kind};
use super::parser::Parsed;
use super::plan::{Plan, Warning};

/// The `# check=` directive: which rules to skip, and whether warnings fail
/// the check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub skip: BTreeSet<String>,
    pub skip_all: bool,
    pub error: bool,
}

impl Config {
    /// Reads `# check=skip=A,B;error=true` from the parsed directives.
    pub fn from_parsed(parsed: &Parsed) -> Result<Self, Error> {
        let Some(directive) = parsed.directive("check") else {
            return Ok(Self::default());
        };
        let mut config = Self::default();
        for part in directive
            .value
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            config.skip_all = true;
                        } else {
                            config.skip.insert(rule.to_string());
                        }
                    }
                }
                "error" => {
                    config.error = match value.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(Error::new(
                                Position::new(directive.line, 1),
                                format!(
                                    "invalid check directive: error={other:?}, expected true or false"
                                ),
                            ));
                        }
                    };
                }
                // BuildKit's experimental rules are opt-in; none are implemented.
                "experimental" => {}
                other => {
                    return Err(Error::new(
                        Position::new(directive.line, 1),
                        format!("invalid check directive: unknown key {other:?}"),
                    )
                    .with_hint("use `# check=skip=<rules>;error=<true|false>`"));
                }
            }
        }
        Ok(config)
    }

    #[must_use]
    pub fn enabled(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.contains(rule)
    }
}

/// Runs every rule over the plan.
#[must_use]
pub fn run(plan: &Plan) -> Vec<Warning> {
    let mut out = Vec::new();
    let parsed = &plan.parsed;
    let warn = |out: &mut Vec<Warning>, rule, position, message: String| {
        out.push(Warning {
            rule,
            position,
            message,
        });
    };

    // ConsistentInstructionCasing: keywords all upper or all lower case.
    let (mut upper, mut lower) = (0usize, 0usize);
    for node in &parsed.nodes {
        if node.keyword == node.keyword.to_ascii_uppercase() {
            upper += 1;
        } else if node.keyword == node.keyword.to_ascii_lowercase() {
            lower += 1;
        }
    }
    let majority_upper = upper >= lower;
    for node in &parsed.nodes {
        let wanted = if majority_upper {
            node.keyword.to_ascii_uppercase()
        } else {
            node.keyword.to_ascii_lowercase()
        };
        if node.keyword != wanted {
            warn(
                &mut out,
                "ConsistentInstructionCasing",
                node.start,
                format!(
                    "command '{}' should match the case of the command majority ({})",
                    node.keyword,
                    if majority_upper {
                        "uppercase"
                    } else {
                        "lowercase"
                    }
                ),
            );
        }
        // LegacyKeyValueFormat: `ENV key value`.
        let name = node.name();
        if (name == "env" || name == "label") && node.args.len() == 3 && node.args[2].is_empty() {
            warn(
                &mut out,
                "LegacyKeyValueFormat",
                node.start,
                format!(
                    "\"{} key=value\" should be used instead of legacy \"{} key value\" format",
                    node.keyword.to_ascii_uppercase(),
                    node.keyword.to_ascii_uppercase()
                ),
            );
        }
        if name == "from" {
            from_casing(node, &mut out);
        }
    }

    for stage in &plan.stages {
        let mut seen_cmd: Vec<(&'static str, Position)> = Vec::new();
        let mut absolute_workdir = false;
        for instruction in &stage.instructions {
            match &instruction.kind {
                Kind::Cmd(Command::Shell(_)) | Kind::Entrypoint(Command::Shell(_)) => warn(
                    &mut out,
                    "JSONArgsRecommended",
                    instruction.start,
                    format!(
                        "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                        instruction.keyword()
                    ),
                ),
                Kind::Maintainer(_) => warn(
                    &mut out,
                    "MaintainerDeprecated",
                    instruction.start,
                    "the MAINTAINER instruction is deprecated, use a label instead to define an image author"
                        .to_string(),
                ),
                Kind::Workdir(dir) => {
                    if dir.starts_with('/') || dir.starts_with('$') {
                        absolute_workdir = true;
                    } else if !absolute_workdir {
                        warn(
                            &mut out,
                            "WorkdirRelativePath",
                            instruction.start,
                            format!("relative workdir {dir:?} can have unexpected results if the base image changes"),
                        );
                    }
                }
                _ => {}
            }
            if matches!(
                instruction.kind,
                Kind::Cmd(_) | Kind::Entrypoint(_) | Kind::Healthcheck(_)
            ) {
                let keyword = instruction.keyword();
                if let Some((_, first)) = seen_cmd.iter().find(|(k, _)| *k == keyword) {
                    warn(
                        &mut out,
                        "MultipleInstructionsDisallowed",
                        *first,
                        format!(
                            "multiple {keyword} instructions should not be used in the same stage because only the last one will be used"
                        ),
                    );
                }
                seen_cmd.push((keyword, instruction.start));
            }
        }
        if let Some(name) = stage.from_name_as_written(parsed) {
            if name != name.to_ascii_lowercase() {
                warn(
                    &mut out,
                    "StageNameCasing",
                    stage.from.start,
                    format!("stage name {name:?} should be lowercase"),
                );
            }
        }
    }
    out.sort_by_key(|w| w.position);
    out.dedup();
    out
}

/// FromAsCasing: `AS` in the same case as `FROM`.
fn from_casing(node: &super::parser::Node, out: &mut Vec<Warning>) {
    let Some(as_word) = node.args.get(1) else {
        return;
    };
    if !as_word.eq_ignore_ascii_case("as") {
        return;
    }
    let from_upper = node.keyword == node.keyword.to_ascii_uppercase();
    let as_upper = as_word == "AS";
    let as_lower = as_word == "as";
    if (from_upper && !as_upper) || (!from_upper && !as_lower) {
        out.push(Warning {
            rule: "FromAsCasing",
            position: node.start,
            message: format!(
                "'{as_word}' and '{}' keywords' casing do not match",
                node.keyword
            ),
        });
    }
}

impl super::plan::Stage {
    /// The `AS` name exactly as written in the Dockerfile.
    #[must_use]
    pub fn from_name_as_written<'p>(&self, parsed: &'p Parsed) -> Option<&'p str> {
        let node = parsed.nodes.iter().find(|n| n.start == self.from.start)?;
        match node.args.as_slice() {
            [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.as_str()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::plan::{Options, plan};

    fn rules(text: &str) -> Vec<(&'static str, usize)> {
        let p = plan(text, &Options::default()).unwrap();
        run(&p)
            .into_iter()
            .map(|w| (w.rule, w.position.line))
            .collect()
    }

    #[test]
    fn each_rule_fires_where_expected() {
        assert_eq!(rules("FROM a\nCMD echo hi\n"), [("JSONArgsRecommended", 2)]);
        assert_eq!(
            rules("FROM a\nMAINTAINER me\n"),
            [("MaintainerDeprecated", 2)]
        );
        assert_eq!(rules("FROM a AS Build\n"), [("StageNameCasing", 1)]);
        assert_eq!(rules("FROM a as b\n"), [("FromAsCasing", 1)]);
        assert_eq!(
            rules("FROM a\nrun true\nRUN true\n"),
            [("ConsistentInstructionCasing", 2)]
        );
        assert_eq!(rules("FROM a\nENV k v\n"), [("LegacyKeyValueFormat", 2)]);
        assert_eq!(rules("FROM a\nWORKDIR app\n"), [("WorkdirRelativePath", 2)]);
        assert_eq!(
            rules("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\n"),
            [("MultipleInstructionsDisallowed", 2)]
        );
        assert!(rules("FROM a\nWORKDIR /app\nWORKDIR sub\nCMD [\"x\"]\n").is_empty());
    }

    #[test]
    fn check_directive() {
        let parsed = crate::dockerfile::parser::parse(
            "# check=skip=JSONArgsRecommended,StageNameCasing;error=true\nFROM a\n",
        )
        .unwrap();
        let config = Config::from_parsed(&parsed).unwrap();
        assert!(config.error);
        assert!(!config.enabled("StageNameCasing"));
        assert!(config.enabled("FromAsCasing"));
        let parsed = crate::dockerfile::parser::parse("# check=skip=all\nFROM a\n").unwrap();
        assert!(
            !Config::from_parsed(&parsed)
                .unwrap()
                .enabled("FromAsCasing")
        );
        let parsed = crate::dockerfile::parser::parse("# check=bogus=1\nFROM a\n").unwrap();
        assert!(Config::from_parsed(&parsed).is_err());
    }
}
