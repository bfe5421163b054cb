//! Turning the API's `placementConstraints` and `placementStrategy` members into typed
//! values, so that bad input is refused before anything is placed.

use super::{BinpackField, PlacementConstraint, PlacementStrategy, SpreadField};
use crate::query::{parse_expression, QueryError};

/// ECS's limit on placement constraints per request.
pub const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
/// ECS's limit on placement strategies per request.
pub const MAX_PLACEMENT_STRATEGIES: usize = 5;

/// Why a placement constraint or strategy given to the API is not acceptable.
/// The API layer maps every variant to `InvalidParameterException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementInputError {
    /// The constraint `type` is neither `distinctInstance` nor `memberOf`.
    #[error("unknown placement constraint type `{kind}`: expected distinctInstance or memberOf")]
    UnknownConstraintType {
        /// The type as given.
        kind: String,
    },
    /// `distinctInstance` was given an expression; it takes none.
    #[error("the distinctInstance placement constraint takes no expression")]
    ExpressionNotAllowed,
    /// `memberOf` was given no (or an empty) expression.
    #[error("the memberOf placement constraint needs an expression")]
    MissingExpression,
    /// The `memberOf` expression does not parse.
    #[error("invalid memberOf expression: {0}")]
    InvalidExpression(#[from] QueryError),
    /// The strategy `type` is not `binpack`, `spread` or `random`.
    #[error("unknown placement strategy type `{kind}`: expected binpack, spread or random")]
    UnknownStrategyType {
        /// The type as given.
        kind: String,
    },
    /// `random` was given a field; it takes none.
    #[error("the random placement strategy takes no field, got `{field}`")]
    FieldNotAllowed {
        /// The field as given.
        field: String,
    },
    /// `binpack` or `spread` was given no field.
    #[error("the {kind} placement strategy needs a field")]
    MissingField {
        /// `binpack` or `spread`.
        kind: &'static str,
    },
    /// `binpack` was given a field other than `cpu` or `memory`.
    #[error("unknown binpack field `{field}`: expected cpu or memory")]
    UnknownBinpackField {
        /// The field as given.
        field: String,
    },
    /// `spread` was given a field other than `instanceId`, `host` or `attribute:<name>`.
    #[error("unknown spread field `{field}`: expected instanceId, host or attribute:<name>")]
    UnknownSpreadField {
        /// The field as given.
        field: String,
    },
    /// More constraints than [`MAX_PLACEMENT_CONSTRAINTS`].
    #[error("{count} placement constraints given, at most {MAX_PLACEMENT_CONSTRAINTS} allowed")]
    TooManyConstraints {
        /// How many were given.
        count: usize,
    },
    /// More strategies than [`MAX_PLACEMENT_STRATEGIES`].
    #[error("{count} placement strategies given, at most {MAX_PLACEMENT_STRATEGIES} allowed")]
    TooManyStrategies {
        /// How many were given.
        count: usize,
    },
}

impl PlacementConstraint {
    /// Reads one `{type, expression}` pair as the API receives it. An empty
    /// expression counts as none.
    pub fn from_input(kind: &str, expression: Option<&str>) -> Result<Self, PlacementInputError> {
        let expression = expression.filter(|text| !text.trim().is_empty());
        match kind {
            "distinctInstance" => match expression {
                None => Ok(Self::DistinctInstance),
                Some(_) => Err(PlacementInputError::ExpressionNotAllowed),
            },
            "memberOf" => match expression {
                Some(text) => Ok(Self::MemberOf(parse_expression(text)?)),
                None => Err(PlacementInputError::MissingExpression),
            },
            other => Err(PlacementInputError::UnknownConstraintType {
                kind: other.to_owned(),
            }),
        }
    }
}

impl PlacementStrategy {
    /// Reads one `{type, field}` pair as the API receives it. `binpack` fields are
    /// case-insensitive (`cpu`, `CPU`), as ECS accepts both; `host` is `instanceId`.
    pub fn from_input(kind: &str, field: Option<&str>) -> Result<Self, PlacementInputError> {
        let field = field.filter(|text| !text.is_empty());
        match kind {
            "random" => match field {
                None => Ok(Self::Random),
                Some(field) => Err(PlacementInputError::FieldNotAllowed {
                    field: field.to_owned(),
                }),
            },
            "binpack" => {
                let field = field.ok_or(PlacementInputError::MissingField { kind: "binpack" })?;
                if field.eq_ignore_ascii_case("cpu") {
                    Ok(Self::Binpack(BinpackField::Cpu))
                } else if field.eq_ignore_ascii_case("memory") {
                    Ok(Self::Binpack(BinpackField::Memory))
                } else {
                    Err(PlacementInputError::UnknownBinpackField {
                        field: field.to_owned(),
                    })
                }
            }
            "spread" => {
                let field = field.ok_or(PlacementInputError::MissingField { kind: "spread" })?;
                if field == "instanceId" || field == "host" {
                    return Ok(Self::Spread(SpreadField::InstanceId));
                }
                match field.strip_prefix("attribute:") {
                    Some(name) if !name.is_empty() => {
                        Ok(Self::Spread(SpreadField::Attribute(name.to_owned())))
                    }
                    _ => Err(PlacementInputError::UnknownSpreadField {
                        field: field.to_owned(),
                    }),
                }
            }
            other => Err(PlacementInputError::UnknownStrategyType {
                kind: other.to_owned(),
            }),
        }
    }
}

/// Reads a request's constraints (`(type, expression)`) and strategies
/// (`(type, field)`) in one go, checking ECS's count limits too. The first problem
/// found is returned.
pub fn validate_placement(
    constraints: &[(&str, Option<&str>)],
    strategies: &[(&str, Option<&str>)],
) -> Result<(Vec<PlacementConstraint>, Vec<PlacementStrategy>), PlacementInputError> {
    if constraints.len() > MAX_PLACEMENT_CONSTRAINTS {
        return Err(PlacementInputError::TooManyConstraints {
            count: constraints.len(),
        });
    }
    if strategies.len() > MAX_PLACEMENT_STRATEGIES {
        return Err(PlacementInputError::TooManyStrategies {
            count: strategies.len(),
        });
    }
    let constraints = constraints
        .iter()
        .map(|(kind, expression)| PlacementConstraint::from_input(kind, *expression))
        .collect::<Result<Vec<_>, _>>()?;
    let strategies = strategies
        .iter()
        .map(|(kind, field)| PlacementStrategy::from_input(kind, *field))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((constraints, strategies))
}
