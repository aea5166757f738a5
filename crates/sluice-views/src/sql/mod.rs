//! `CREATE VIEW name AS SELECT ...` to a `Plan`: the subset of docs/sql.md, and a
//! clear error with a line and column for everything else. `select.rs` translates
//! queries (FROM, joins, grouping), `scalar.rs` expressions.

mod scalar;
mod select;

use sqlparser::ast::{self, Spanned};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::expr::Expr;
use crate::plan::{self, Agg, Catalog, Column, ColumnId, Plan, Rel, Scan, ScanDraft};

/// SQL a view cannot be made of: what is wrong, and where (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct SqlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
}

type Result<T> = std::result::Result<T, SqlError>;

fn at<T>(node: &impl Spanned, message: impl Into<String>) -> Result<T> {
    let start = node.span().start;
    Err(SqlError {
        message: message.into(),
        line: start.line,
        column: start.column,
    })
}

fn unsupported<T>(node: &(impl Spanned + std::fmt::Display), what: &str) -> Result<T> {
    at(
        node,
        format!("{what} is not supported in views (`{node}`); docs/sql.md lists what is"),
    )
}

fn parser_error(e: ParserError) -> SqlError {
    let message = e.to_string();
    // sqlparser ends its messages with "at Line: L, Column: C".
    let num = |tag: &str| -> u64 {
        message
            .rfind(tag)
            .map(|i| &message[i + tag.len()..])
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    };
    let (line, column) = (num("Line: "), num("Column: "));
    let message = match message.find(" at Line: ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    SqlError {
        message: format!("SQL does not parse: {message}"),
        line,
        column,
    }
}

/// Compiles a `CREATE VIEW` statement against the event types of `catalog`.
pub fn compile(sql: &str, catalog: &dyn Catalog) -> Result<Plan> {
    let dialect = PostgreSqlDialect {};
    let statements = Parser::new(&dialect)
        .with_recursion_limit(64)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(parser_error)?;
    let [statement] = statements.as_slice() else {
        return Err(SqlError {
            message: format!(
                "expected one CREATE VIEW statement, got {}",
                statements.len()
            ),
            line: 1,
            column: 1,
        });
    };
    let ast::Statement::CreateView(view) = statement else {
        return unsupported(statement, "a statement other than CREATE VIEW");
    };
    if view.or_alter
        || view.secure
        || view.temporary
        || view.to.is_some()
        || view.params.is_some()
        || !view.cluster_by.is_empty()
    {
        return unsupported(statement, "this form of CREATE VIEW");
    }
    if !view.columns.is_empty() {
        return at(
            &view.name,
            "a column list after the view name is not supported: name columns with AS",
        );
    }
    let name = object_name(&view.name)?;
    let declared = declared_key(&view.options)?;
    let mut planner = Planner {
        catalog,
        scans: Vec::new(),
        next_id: 0,
    };
    let (rel, columns) = planner.query(&view.query)?;
    let Rel::Map {
        id,
        input,
        mut exprs,
    } = rel
    else {
        unreachable!("a query ends in its projection")
    };
    let mut columns: Vec<Column> = columns;
    let key = match declared {
        Some(names) => names
            .iter()
            .map(|(n, ident)| {
                columns
                    .iter()
                    .position(|c| !c.spread && c.name == *n)
                    .map_or_else(
                        || {
                            at(
                                ident,
                                format!(
                                    "the declared key column `{n}` is not a column of the view"
                                ),
                            )
                        },
                        Ok,
                    )
            })
            .collect::<Result<Vec<usize>>>()?,
        None => {
            let candidates = plan::keys(&input, &planner.scans);
            let Some(key) = candidates.into_iter().next() else {
                return at(
                    &view.name,
                    "the view's key cannot be derived (a source without a key, read as a stream, and no GROUP BY): declare it with CREATE VIEW name WITH (key = 'column') AS ...",
                );
            };
            key.into_iter()
                .map(|c| {
                    let e = Expr::Col(c.clone());
                    match exprs.iter().position(|x| *x == e) {
                        Some(i) => i,
                        None => {
                            exprs.push(e);
                            columns.push(Column {
                                name: match &c {
                                    ColumnId::Path(_, p) => p.join("."),
                                    ColumnId::Out(_, i) => format!("key_{i}"),
                                },
                                spread: false,
                                hidden: true,
                            });
                            exprs.len() - 1
                        }
                    }
                })
                .collect()
        }
    };
    let rel = Rel::Map { id, input, exprs };
    plan::collect_paths(&rel, &mut planner.scans);
    let (root, _) = plan::bind(rel, &planner.scans);
    let scans = planner
        .scans
        .into_iter()
        .map(|s| Scan {
            key_len: match &s.info.kind {
                plan::SourceKind::Table { key } => key.len(),
                plan::SourceKind::Stream => 0,
            },
            event_type: s.event_type,
            alias: s.alias,
            info: s.info,
            columns: s.paths,
        })
        .collect();
    Ok(Plan {
        name,
        scans,
        root,
        columns,
        key,
    })
}

fn object_name(name: &ast::ObjectName) -> Result<String> {
    let mut parts = Vec::new();
    for part in &name.0 {
        match part.as_ident() {
            Some(i) => parts.push(i.value.clone()),
            None => return unsupported(name, "this kind of name"),
        }
    }
    Ok(parts.join("."))
}

/// `WITH (key = 'a, b')`.
fn declared_key(options: &ast::CreateTableOptions) -> Result<Option<Vec<(String, ast::Expr)>>> {
    let list = match options {
        ast::CreateTableOptions::None => return Ok(None),
        ast::CreateTableOptions::With(list) => list,
        other => return unsupported(other, "these view options"),
    };
    let mut key = None;
    for option in list {
        match option {
            ast::SqlOption::KeyValue { key: k, value } if k.value.eq_ignore_ascii_case("key") => {
                let ast::Expr::Value(v) = value else {
                    return at(
                        value,
                        "key must be a string naming the key columns: key = 'sku'",
                    );
                };
                let Some(text) = v.value.clone().into_string() else {
                    return at(
                        value,
                        "key must be a string naming the key columns: key = 'sku'",
                    );
                };
                let names: Vec<(String, ast::Expr)> = text
                    .split(',')
                    .map(|n| (n.trim().to_string(), value.clone()))
                    .filter(|(n, _)| !n.is_empty())
                    .collect();
                if names.is_empty() {
                    return at(value, "key names no column");
                }
                key = Some(names);
            }
            other => return unsupported(other, "this view option (only key = '...')"),
        }
    }
    Ok(key)
}

/// What a name in FROM stands for.
#[derive(Clone, Debug)]
enum Binding {
    Scan(usize),
    /// A subquery in FROM: the outputs of its projection node.
    Derived {
        node: usize,
        names: Vec<String>,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    alias: String,
    binding: Binding,
}

/// The grouped query being translated: SELECT and HAVING may use its group
/// expressions and aggregates, nothing else of its input.
struct Grouping<'s> {
    node: usize,
    /// The input's scope, for the arguments of aggregates.
    input: &'s [Entry],
    group: Vec<String>,
    aggs: Vec<(String, Agg<ColumnId>)>,
}

struct Planner<'c> {
    catalog: &'c dyn Catalog,
    scans: Vec<ScanDraft>,
    next_id: usize,
}

/// Translation of a SELECT item list met an aggregate outside a grouped query.
const NEEDS_GROUPING: &str = "\u{0}needs grouping";

/// The AND-ed parts of a condition.
fn conjuncts(e: &ast::Expr) -> Vec<&ast::Expr> {
    match e {
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::And,
            right,
        } => {
            let mut out = conjuncts(left);
            out.extend(conjuncts(right));
            out
        }
        ast::Expr::Nested(x) => conjuncts(x),
        other => vec![other],
    }
}

/// The position in `scope` of the entry a column belongs to.
fn owner(scope: &[Entry], c: &ColumnId) -> Option<usize> {
    scope.iter().position(|e| match (&e.binding, c) {
        (Binding::Scan(s), ColumnId::Path(x, _)) => s == x,
        (Binding::Derived { node, .. }, ColumnId::Out(x, _)) => node == x,
        _ => false,
    })
}
