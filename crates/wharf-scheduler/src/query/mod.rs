//! The cluster query language: `subject operator [argument]`, combined with
//! `and`/`or`/`not` and parentheses, as ECS documents it.
//!
//! [`parse_expression`] turns text into an [`Expression`] once, at the edge; placement
//! (`memberOf`) and `ListContainerInstances`' `filter` then evaluate it with
//! [`Expression::matches`] as often as they like.
//!
//! Semantics worth knowing, where ECS's page is silent:
//! - `=~`/`matches` take a (Java-style) regular expression that must match the whole
//!   value, so `t2.*` selects `t2.micro`, and `t2` alone selects only `t2`.
//! - A negated operator (`!=`, `!in`, `!~`, `!exists`) is exactly the negation of its
//!   positive form. An instance without the attribute therefore matches
//!   `attribute:x != y`, and `task:group != database` means "no task of the group
//!   `database` here".
//! - `task:group` is true for a positive operator when any task on the instance
//!   satisfies it; `task:group exists` means the instance has any task.
//! - `registeredAt` compares at the precision the argument was written with:
//!   `registeredAt == 2018-06-18` means "registered that day (UTC)".
//! - Ordering on `attribute:<name>` compares numbers as numbers and anything else as
//!   text; an attribute that is absent or has no value satisfies no comparison.
//! - Each subject takes only the operators ECS lists for it; another is a parse error.

mod date;
mod parser;
mod version;

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;

use crate::snapshot::InstanceSnapshot;
pub use date::{DatePrecision, QueryDate};
pub use parser::parse_expression;
pub use version::AgentVersion;

/// ECS's documented limit on an expression's length, in characters.
pub const MAX_EXPRESSION_LENGTH: usize = 2000;

/// How deeply `not` and parentheses may nest; deeper input is refused rather than
/// risking the stack.
pub const MAX_EXPRESSION_NESTING: usize = 64;

/// A parsed cluster query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    /// `subject operator [argument]`.
    Condition(Condition),
    /// `!e` / `not e`.
    Not(Box<Expression>),
    /// `a && b` / `a and b`.
    And(Box<Expression>, Box<Expression>),
    /// `a || b` / `a or b`.
    Or(Box<Expression>, Box<Expression>),
}

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `agentConnected`: `true` or `false`.
    AgentConnected,
    /// `agentVersion`, in version order.
    AgentVersion,
    /// `attribute:<name>`.
    Attribute(String),
    /// `ec2InstanceId`.
    Ec2InstanceId,
    /// `registeredAt`, a date.
    RegisteredAt,
    /// `runningTasksCount`, a number.
    RunningTasksCount,
    /// `task:group`, the groups of the tasks on the instance.
    TaskGroup,
}

/// A comparison operator; each has a symbolic and a word spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `==`, `equals`
    Equals,
    /// `!=`, `not_equals`
    NotEquals,
    /// `>`, `greater_than`
    GreaterThan,
    /// `>=`, `greater_than_equal`
    GreaterThanEqual,
    /// `<`, `less_than`
    LessThan,
    /// `<=`, `less_than_equal`
    LessThanEqual,
    /// `exists`
    Exists,
    /// `!exists`, `not_exists`
    NotExists,
    /// `in [a, b]`
    In,
    /// `!in [a, b]`, `not_in [a, b]`
    NotIn,
    /// `=~`, `matches`
    Matches,
    /// `!~`, `not_matches`
    NotMatches,
}

impl Operator {
    /// The symbolic spelling, e.g. `!=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Equals => "==",
            Self::NotEquals => "!=",
            Self::GreaterThan => ">",
            Self::GreaterThanEqual => ">=",
            Self::LessThan => "<",
            Self::LessThanEqual => "<=",
            Self::Exists => "exists",
            Self::NotExists => "!exists",
            Self::In => "in",
            Self::NotIn => "!in",
            Self::Matches => "=~",
            Self::NotMatches => "!~",
        }
    }

    /// For a negated operator, its positive form; `None` for positive ones.
    fn negation_of(self) -> Option<Self> {
        match self {
            Self::NotEquals => Some(Self::Equals),
            Self::NotExists => Some(Self::Exists),
            Self::NotIn => Some(Self::In),
            Self::NotMatches => Some(Self::Matches),
            _ => None,
        }
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            Self::GreaterThan | Self::GreaterThanEqual | Self::LessThan | Self::LessThanEqual
        )
    }

    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Self::GreaterThan => ordering == Ordering::Greater,
            Self::GreaterThanEqual => ordering != Ordering::Less,
            Self::LessThan => ordering == Ordering::Less,
            Self::LessThanEqual => ordering != Ordering::Greater,
            Self::Equals => ordering == Ordering::Equal,
            _ => false,
        }
    }
}

impl Subject {
    /// Whether ECS allows `operator` with this subject.
    pub fn allows(&self, operator: Operator) -> bool {
        use Operator::*;
        match self {
            Self::AgentConnected | Self::Ec2InstanceId => {
                matches!(
                    operator,
                    Equals | NotEquals | In | NotIn | Matches | NotMatches
                )
            }
            Self::AgentVersion | Self::RegisteredAt | Self::RunningTasksCount => {
                matches!(operator, Equals | NotEquals) || operator.is_ordering()
            }
            Self::TaskGroup => !operator.is_ordering(),
            Self::Attribute(_) => true,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AgentConnected => f.write_str("agentConnected"),
            Self::AgentVersion => f.write_str("agentVersion"),
            Self::Attribute(name) => write!(f, "attribute:{name}"),
            Self::Ec2InstanceId => f.write_str("ec2InstanceId"),
            Self::RegisteredAt => f.write_str("registeredAt"),
            Self::RunningTasksCount => f.write_str("runningTasksCount"),
            Self::TaskGroup => f.write_str("task:group"),
        }
    }
}

/// One `subject operator [argument]` with its argument already read into the type
/// the subject compares with.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    subject: Subject,
    operator: Operator,
    argument: Argument,
}

/// The argument, typed at parse time; each keeps its source text for display.
#[derive(Debug, Clone)]
enum Argument {
    Absent,
    Text(String),
    TextList(Vec<String>),
    Pattern {
        source: String,
        regex: Regex,
    },
    Count {
        source: String,
        value: i64,
    },
    Date {
        source: String,
        date: QueryDate,
    },
    Version {
        source: String,
        version: AgentVersion,
    },
}

impl PartialEq for Argument {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Absent, Self::Absent) => true,
            (Self::Text(a), Self::Text(b)) => a == b,
            (Self::TextList(a), Self::TextList(b)) => a == b,
            (Self::Pattern { source: a, .. }, Self::Pattern { source: b, .. })
            | (Self::Count { source: a, .. }, Self::Count { source: b, .. })
            | (Self::Date { source: a, .. }, Self::Date { source: b, .. })
            | (Self::Version { source: a, .. }, Self::Version { source: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Condition {
    /// What the condition looks at.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// How it compares.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// For an `attribute:<name>` condition, the attribute's name.
    pub(crate) fn attribute_name(&self) -> Option<&str> {
        match &self.subject {
            Subject::Attribute(name) => Some(name),
            _ => None,
        }
    }

    /// Whether an `attribute:<name>` condition holds for an instance whose attribute
    /// is `value` (`None` when absent, `Some(None)` when present without a value).
    /// Placement asks this once per distinct value rather than once per instance.
    /// Conditions on other subjects never hold here.
    pub(crate) fn holds_for_attribute(&self, value: Option<Option<&str>>) -> bool {
        if !matches!(self.subject, Subject::Attribute(_)) {
            return false;
        }
        match self.operator.negation_of() {
            Some(positive) => !self.attribute_holds(positive, value),
            None => self.attribute_holds(self.operator, value),
        }
    }

    fn attribute_holds(&self, operator: Operator, value: Option<Option<&str>>) -> bool {
        match value {
            None => false,
            Some(_) if operator == Operator::Exists => true,
            Some(None) => false,
            Some(Some(value)) => self.text_holds(operator, value),
        }
    }

    pub(crate) fn holds(&self, instance: &dyn QueryTarget) -> bool {
        match self.operator.negation_of() {
            Some(positive) => !self.holds_positive(positive, instance),
            None => self.holds_positive(self.operator, instance),
        }
    }

    fn holds_positive(&self, operator: Operator, instance: &dyn QueryTarget) -> bool {
        match &self.subject {
            Subject::AgentConnected => {
                let value = if instance.agent_connected() {
                    "true"
                } else {
                    "false"
                };
                self.text_holds(operator, value)
            }
            Subject::Ec2InstanceId => self.text_holds(operator, instance.ec2_instance_id()),
            Subject::Attribute(name) => self.attribute_holds(operator, instance.attribute(name)),
            Subject::TaskGroup => {
                if operator == Operator::Exists {
                    return instance.any_task_group(&mut |_| true);
                }
                instance.any_task_group(&mut |group| self.text_holds(operator, group))
            }
            Subject::AgentVersion => match &self.argument {
                Argument::Version { version, .. } => {
                    let actual = AgentVersion::parse_lenient(instance.agent_version());
                    operator.accepts(actual.cmp(version))
                }
                _ => false,
            },
            Subject::RegisteredAt => match &self.argument {
                Argument::Date { date, .. } => {
                    let actual = date.truncate(instance.registered_at_ms());
                    operator.accepts(actual.cmp(&date.epoch_ms))
                }
                _ => false,
            },
            Subject::RunningTasksCount => match &self.argument {
                Argument::Count { value, .. } => {
                    operator.accepts(instance.running_tasks_count().cmp(value))
                }
                _ => false,
            },
        }
    }

    fn text_holds(&self, operator: Operator, value: &str) -> bool {
        match (operator, &self.argument) {
            (Operator::Exists, _) => true,
            (Operator::Matches, Argument::Pattern { regex, .. }) => regex.is_match(value),
            (Operator::In, Argument::TextList(items)) => items.iter().any(|item| item == value),
            (Operator::Equals, Argument::Text(wanted)) => value == wanted,
            (_, Argument::Text(wanted)) if operator.is_ordering() => {
                operator.accepts(compare_text_or_numbers(value, wanted))
            }
            _ => false,
        }
    }
}

/// Numbers compare as numbers (`9 < 10`), anything else as text.
fn compare_text_or_numbers(left: &str, right: &str) -> Ordering {
    match (left.parse::<f64>(), right.parse::<f64>()) {
        (Ok(left), Ok(right)) if left.is_finite() && right.is_finite() => {
            left.partial_cmp(&right).unwrap_or(Ordering::Equal)
        }
        _ => left.cmp(right),
    }
}

impl Expression {
    /// Whether the instance satisfies the expression.
    pub fn matches(&self, instance: &InstanceSnapshot) -> bool {
        self.matches_target(instance)
    }

    pub(crate) fn matches_target(&self, instance: &dyn QueryTarget) -> bool {
        match self {
            Self::Condition(condition) => condition.holds(instance),
            Self::Not(inner) => !inner.matches_target(instance),
            Self::And(left, right) => {
                left.matches_target(instance) && right.matches_target(instance)
            }
            Self::Or(left, right) => {
                left.matches_target(instance) || right.matches_target(instance)
            }
        }
    }

    /// Whether any condition looks at the tasks on an instance (`task:group`,
    /// `runningTasksCount`), i.e. whether placing a task can change the answer.
    pub fn depends_on_tasks(&self) -> bool {
        match self {
            Self::Condition(condition) => matches!(
                condition.subject,
                Subject::TaskGroup | Subject::RunningTasksCount
            ),
            Self::Not(inner) => inner.depends_on_tasks(),
            Self::And(left, right) | Self::Or(left, right) => {
                left.depends_on_tasks() || right.depends_on_tasks()
            }
        }
    }
}

/// What an expression can ask of an instance. Placement implements it for an
/// instance plus the tasks planned onto it so far, so `memberOf` sees the plan.
pub(crate) trait QueryTarget {
    fn agent_connected(&self) -> bool;
    fn agent_version(&self) -> &str;
    fn attribute(&self, name: &str) -> Option<Option<&str>>;
    fn ec2_instance_id(&self) -> &str;
    fn registered_at_ms(&self) -> i64;
    fn running_tasks_count(&self) -> i64;
    /// Whether any task's group satisfies `predicate`.
    fn any_task_group(&self, predicate: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl QueryTarget for InstanceSnapshot {
    fn agent_connected(&self) -> bool {
        self.agent_connected
    }
    fn agent_version(&self) -> &str {
        &self.agent_version
    }
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        InstanceSnapshot::attribute(self, name)
    }
    fn ec2_instance_id(&self) -> &str {
        &self.ec2_instance_id
    }
    fn registered_at_ms(&self) -> i64 {
        self.registered_at_ms
    }
    fn running_tasks_count(&self) -> i64 {
        self.running_tasks_count
    }
    fn any_task_group(&self, predicate: &mut dyn FnMut(&str) -> bool) -> bool {
        self.tasks.iter().any(|task| predicate(&task.group))
    }
}

impl fmt::Display for Expression {
    /// A canonical spelling that parses back to an equal expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Condition(condition) => write!(f, "{condition}"),
            Self::Not(inner) => write!(f, "not ({inner})"),
            Self::And(left, right) => write!(f, "({left} and {right})"),
            Self::Or(left, right) => write!(f, "({left} or {right})"),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.subject, self.operator.symbol())?;
        match &self.argument {
            Argument::Absent => Ok(()),
            Argument::Text(text) => write!(f, " {}", quoted(text)),
            Argument::TextList(items) => {
                let items: Vec<String> = items.iter().map(|item| quoted(item)).collect();
                write!(f, " [{}]", items.join(", "))
            }
            Argument::Pattern { source, .. }
            | Argument::Count { source, .. }
            | Argument::Date { source, .. }
            | Argument::Version { source, .. } => write!(f, " {}", quoted(source)),
        }
    }
}

/// Quotes a value unless it can be written bare.
fn quoted(text: &str) -> String {
    if !text.is_empty() && text.chars().all(parser::is_bare_value_char) {
        text.to_owned()
    } else if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

/// What the parser wanted at the position where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A subject such as `attribute:ecs.instance-type` or `task:group`.
    Subject,
    /// An operator such as `==` or `in`.
    Operator,
    /// A value after the operator.
    Argument,
    /// A `[`-opened list after `in`/`not_in`.
    ArgumentList,
    /// `,` or `]` inside a list.
    ListSeparator,
    /// The quote closing a quoted value.
    ClosingQuote,
    /// `)` closing a parenthesis.
    ClosingParenthesis,
    /// `and`, `or`, or the end of the expression.
    BooleanOperatorOrEnd,
    /// `true` or `false` (for `agentConnected`).
    Boolean,
    /// A whole number (for `runningTasksCount`).
    Number,
    /// A date such as `2018-06-18` or `2018-06-18T22:28:28Z` (for `registeredAt`).
    Date,
    /// A dotted version such as `1.14.5` (for `agentVersion`).
    Version,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Subject => {
                "a subject (agentConnected, agentVersion, attribute:<name>, ec2InstanceId, \
                 registeredAt, runningTasksCount, task:group)"
            }
            Self::Operator => "an operator",
            Self::Argument => "a value",
            Self::ArgumentList => "a list such as [a, b]",
            Self::ListSeparator => "`,` or `]`",
            Self::ClosingQuote => "a closing quote",
            Self::ClosingParenthesis => "`)`",
            Self::BooleanOperatorOrEnd => "`and`, `or` or the end of the expression",
            Self::Boolean => "true or false",
            Self::Number => "a whole number",
            Self::Date => "a date such as 2018-06-18 or 2018-06-18T22:28:28Z",
            Self::Version => "a version such as 1.14.5",
        })
    }
}

/// Why a cluster query could not be parsed. Every variant names the byte offset in
/// the expression where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The parser wanted one thing and found another.
    #[error("at byte {position}: expected {expected}, found {found}")]
    Unexpected {
        /// Byte offset into the expression.
        position: usize,
        /// What would have been accepted.
        expected: Expected,
        /// What was there (`end of expression` at the end).
        found: String,
    },
    /// The operator exists but ECS does not allow it with this subject.
    #[error("at byte {position}: operator `{operator}` cannot be used with subject `{subject}`")]
    OperatorNotAllowed {
        /// Byte offset of the operator.
        position: usize,
        /// The subject as written.
        subject: String,
        /// The operator as written.
        operator: String,
    },
    /// The `matches` argument is not a valid regular expression.
    #[error("at byte {position}: invalid regular expression `{pattern}`: {reason}")]
    InvalidPattern {
        /// Byte offset of the pattern.
        position: usize,
        /// The pattern as written.
        pattern: String,
        /// The regular-expression engine's explanation.
        reason: String,
    },
    /// The expression is longer than [`MAX_EXPRESSION_LENGTH`] characters.
    #[error(
        "at byte {position}: the expression is longer than {MAX_EXPRESSION_LENGTH} characters"
    )]
    TooLong {
        /// Byte offset of the first character past the limit.
        position: usize,
    },
    /// `not` and parentheses nest deeper than [`MAX_EXPRESSION_NESTING`].
    #[error(
        "at byte {position}: the expression nests deeper than {MAX_EXPRESSION_NESTING} levels"
    )]
    TooDeep {
        /// Byte offset where the limit was passed.
        position: usize,
    },
}

impl QueryError {
    /// The byte offset in the expression where the problem starts.
    pub fn position(&self) -> usize {
        match self {
            Self::Unexpected { position, .. }
            | Self::OperatorNotAllowed { position, .. }
            | Self::InvalidPattern { position, .. }
            | Self::TooLong { position }
            | Self::TooDeep { position } => *position,
        }
    }
}
