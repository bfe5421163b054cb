//! A recursive-descent parser over the expression's bytes. Precedence, loosest first:
//! `or`, `and`, `not`; parentheses group. Arguments are read according to the
//! operator before them, so a bare regular expression like `t2.*` or a date like
//! `2018-06-18T22:28:28+00:00` needs no quoting.

use regex::RegexBuilder;

use super::{
    AgentVersion, Argument, Condition, Expected, Expression, Operator, QueryDate, QueryError,
    Subject, MAX_EXPRESSION_LENGTH, MAX_EXPRESSION_NESTING,
};

/// Compiled patterns are small; refusing huge ones keeps a hostile filter cheap.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Parses a cluster query such as
/// `attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d`.
pub fn parse_expression(text: &str) -> Result<Expression, QueryError> {
    if let Some((position, _)) = text.char_indices().nth(MAX_EXPRESSION_LENGTH) {
        return Err(QueryError::TooLong { position });
    }
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        position: 0,
        depth: 0,
    };
    let expression = parser.parse_or()?;
    parser.skip_whitespace();
    if !parser.at_end() {
        return Err(parser.unexpected(Expected::BooleanOperatorOrEnd));
    }
    Ok(expression)
}

/// Characters a value may contain without quotes.
pub(super) fn is_bare_value_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '[' | ']' | ',' | '\'' | '"' | '&' | '|')
}

/// Characters that may continue a subject or a word operator.
fn is_word_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':' | b'/' | b'@')
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    position: usize,
    depth: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.position >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(c) = self.text[self.position..].chars().next() {
            if !c.is_whitespace() {
                break;
            }
            self.position += c.len_utf8();
        }
    }

    /// What is at the current position, for error messages.
    fn found(&self) -> String {
        let rest = &self.text[self.position..];
        if rest.is_empty() {
            return "end of expression".to_owned();
        }
        let token: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace())
            .take(24)
            .collect();
        format!("`{token}`")
    }

    fn unexpected(&self, expected: Expected) -> QueryError {
        self.unexpected_at(self.position, expected)
    }

    fn unexpected_at(&self, position: usize, expected: Expected) -> QueryError {
        let saved = Parser {
            text: self.text,
            bytes: self.bytes,
            position,
            depth: 0,
        };
        QueryError::Unexpected {
            position,
            expected,
            found: saved.found(),
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if self.text[self.position..].starts_with(symbol) {
            self.position += symbol.len();
            true
        } else {
            false
        }
    }

    /// Consumes `word` (any case) when it stands alone, not as the start of a longer
    /// word: `not(` and `not x` are `not`, `not_exists` is not.
    fn eat_word(&mut self, word: &str) -> bool {
        let end = self.position + word.len();
        let Some(candidate) = self.bytes.get(self.position..end) else {
            return false;
        };
        if !candidate.eq_ignore_ascii_case(word.as_bytes()) {
            return false;
        }
        if self.bytes.get(end).copied().is_some_and(is_word_char) {
            return false;
        }
        self.position = end;
        true
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_NESTING {
            return Err(QueryError::TooDeep {
                position: self.position,
            });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expression, QueryError> {
        let mut left = self.parse_and()?;
        loop {
            self.skip_whitespace();
            if self.eat_symbol("||") || self.eat_word("or") {
                let right = self.parse_and()?;
                left = Expression::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn parse_and(&mut self) -> Result<Expression, QueryError> {
        let mut left = self.parse_unary()?;
        loop {
            self.skip_whitespace();
            if self.eat_symbol("&&") || self.eat_word("and") {
                let right = self.parse_unary()?;
                left = Expression::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn parse_unary(&mut self) -> Result<Expression, QueryError> {
        self.skip_whitespace();
        if self.eat_symbol("!") || self.eat_word("not") {
            self.enter()?;
            let inner = self.parse_unary()?;
            self.depth -= 1;
            return Ok(Expression::Not(Box::new(inner)));
        }
        if self.eat_symbol("(") {
            self.enter()?;
            let inner = self.parse_or()?;
            self.skip_whitespace();
            if !self.eat_symbol(")") {
                return Err(self.unexpected(Expected::ClosingParenthesis));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        self.parse_condition().map(Expression::Condition)
    }

    fn parse_condition(&mut self) -> Result<Condition, QueryError> {
        let subject_start = self.position;
        while self.peek().is_some_and(is_word_char) {
            self.position += 1;
        }
        let subject_text = &self.text[subject_start..self.position];
        let subject = match subject_text {
            "agentConnected" => Subject::AgentConnected,
            "agentVersion" => Subject::AgentVersion,
            "ec2InstanceId" => Subject::Ec2InstanceId,
            "registeredAt" => Subject::RegisteredAt,
            "runningTasksCount" => Subject::RunningTasksCount,
            "task:group" => Subject::TaskGroup,
            other => match other.strip_prefix("attribute:") {
                Some(name) if !name.is_empty() => Subject::Attribute(name.to_owned()),
                _ => return Err(self.unexpected_at(subject_start, Expected::Subject)),
            },
        };

        self.skip_whitespace();
        let operator_start = self.position;
        let operator = self.parse_operator()?;
        if !subject.allows(operator) {
            return Err(QueryError::OperatorNotAllowed {
                position: operator_start,
                subject: subject_text.to_owned(),
                operator: self.text[operator_start..self.position].to_owned(),
            });
        }

        let argument = self.parse_argument(&subject, operator)?;
        Ok(Condition {
            subject,
            operator,
            argument,
        })
    }

    fn parse_operator(&mut self) -> Result<Operator, QueryError> {
        // Longer symbols first, so `!exists` is not read as `!` and `>=` not as `>`.
        const SYMBOLS: [(&str, Operator); 8] = [
            ("==", Operator::Equals),
            ("!=", Operator::NotEquals),
            ("=~", Operator::Matches),
            ("!~", Operator::NotMatches),
            (">=", Operator::GreaterThanEqual),
            ("<=", Operator::LessThanEqual),
            (">", Operator::GreaterThan),
            ("<", Operator::LessThan),
        ];
        const WORDS: [(&str, Operator); 14] = [
            ("!exists", Operator::NotExists),
            ("!in", Operator::NotIn),
            ("equals", Operator::Equals),
            ("not_equals", Operator::NotEquals),
            ("greater_than_equal", Operator::GreaterThanEqual),
            ("greater_than", Operator::GreaterThan),
            ("less_than_equal", Operator::LessThanEqual),
            ("less_than", Operator::LessThan),
            ("exists", Operator::Exists),
            ("not_exists", Operator::NotExists),
            ("in", Operator::In),
            ("not_in", Operator::NotIn),
            ("matches", Operator::Matches),
            ("not_matches", Operator::NotMatches),
        ];
        for (word, operator) in WORDS {
            if self.eat_word(word) {
                return Ok(operator);
            }
        }
        for (symbol, operator) in SYMBOLS {
            if self.eat_symbol(symbol) {
                return Ok(operator);
            }
        }
        Err(self.unexpected(Expected::Operator))
    }

    fn parse_argument(
        &mut self,
        subject: &Subject,
        operator: Operator,
    ) -> Result<Argument, QueryError> {
        match operator {
            Operator::Exists | Operator::NotExists => Ok(Argument::Absent),
            Operator::In | Operator::NotIn => {
                let items = self.parse_list()?;
                if *subject == Subject::AgentConnected {
                    let mut booleans = Vec::with_capacity(items.len());
                    for (position, item) in items {
                        booleans.push(self.boolean(position, &item)?);
                    }
                    return Ok(Argument::TextList(booleans));
                }
                Ok(Argument::TextList(
                    items.into_iter().map(|(_, item)| item).collect(),
                ))
            }
            Operator::Matches | Operator::NotMatches => {
                let (position, pattern) = self.parse_value()?;
                let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|error| QueryError::InvalidPattern {
                        position,
                        pattern: pattern.clone(),
                        reason: error.to_string(),
                    })?;
                Ok(Argument::Pattern {
                    source: pattern,
                    regex,
                })
            }
            _ => {
                let (position, value) = self.parse_value()?;
                match subject {
                    Subject::AgentConnected => Ok(Argument::Text(self.boolean(position, &value)?)),
                    Subject::AgentVersion => match AgentVersion::parse(&value) {
                        Some(version) => Ok(Argument::Version {
                            source: value,
                            version,
                        }),
                        None => Err(self.unexpected_at(position, Expected::Version)),
                    },
                    Subject::RegisteredAt => match QueryDate::parse(&value) {
                        Some(date) => Ok(Argument::Date {
                            source: value,
                            date,
                        }),
                        None => Err(self.unexpected_at(position, Expected::Date)),
                    },
                    Subject::RunningTasksCount => match value.parse::<i64>() {
                        Ok(count) => Ok(Argument::Count {
                            source: value,
                            value: count,
                        }),
                        Err(_) => Err(self.unexpected_at(position, Expected::Number)),
                    },
                    Subject::Attribute(_) | Subject::Ec2InstanceId | Subject::TaskGroup => {
                        Ok(Argument::Text(value))
                    }
                }
            }
        }
    }

    fn boolean(&self, position: usize, value: &str) -> Result<String, QueryError> {
        if value.eq_ignore_ascii_case("true") {
            Ok("true".to_owned())
        } else if value.eq_ignore_ascii_case("false") {
            Ok("false".to_owned())
        } else {
            Err(self.unexpected_at(position, Expected::Boolean))
        }
    }

    /// A quoted or bare value, with the byte offset it starts at.
    fn parse_value(&mut self) -> Result<(usize, String), QueryError> {
        self.skip_whitespace();
        let start = self.position;
        if let Some(quote @ (b'\'' | b'"')) = self.peek() {
            return self.parse_quoted(quote);
        }
        while let Some(c) = self.text[self.position..].chars().next() {
            if !is_bare_value_char(c) {
                break;
            }
            self.position += c.len_utf8();
        }
        if self.position == start {
            return Err(self.unexpected(Expected::Argument));
        }
        Ok((start, self.text[start..self.position].to_owned()))
    }

    fn parse_quoted(&mut self, quote: u8) -> Result<(usize, String), QueryError> {
        let start = self.position;
        let content_start = start + 1;
        match self.bytes[content_start..].iter().position(|&b| b == quote) {
            Some(length) => {
                self.position = content_start + length + 1;
                Ok((
                    start,
                    self.text[content_start..content_start + length].to_owned(),
                ))
            }
            None => {
                self.position = self.bytes.len();
                Err(self.unexpected(Expected::ClosingQuote))
            }
        }
    }

    /// `[a, 'b', "c"]`, each item with the byte offset it starts at.
    fn parse_list(&mut self) -> Result<Vec<(usize, String)>, QueryError> {
        self.skip_whitespace();
        if !self.eat_symbol("[") {
            return Err(self.unexpected(Expected::ArgumentList));
        }
        let mut items = Vec::new();
        loop {
            items.push(self.parse_value()?);
            self.skip_whitespace();
            if self.eat_symbol(",") {
                continue;
            }
            if self.eat_symbol("]") {
                return Ok(items);
            }
            return Err(self.unexpected(Expected::ListSeparator));
        }
    }
}
