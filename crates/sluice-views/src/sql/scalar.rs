//! SQL expressions to `Expr`: column references, operators, CASE, CAST, functions
//! and aggregates (inside a grouped query).

use sqlparser::ast;

use super::{
    Binding, Entry, Grouping, NEEDS_GROUPING, Planner, Result, SqlError, at, object_name,
    unsupported,
};
use crate::datum::Datum;
use crate::expr::{BinOp, Expr, Func, Type};
use crate::plan::{Agg, AggFunc, ColumnId};

impl Planner<'_> {
    fn column(&self, parts: &[ast::Ident], scope: &[Entry], node: &ast::Expr) -> Result<ColumnId> {
        let names: Vec<&str> = parts.iter().map(|i| i.value.as_str()).collect();
        let resolve = |entry: &Entry, path: &[&str]| -> Result<ColumnId> {
            match &entry.binding {
                Binding::Scan(s) => Ok(ColumnId::Path(
                    *s,
                    path.iter().map(|p| p.to_string()).collect(),
                )),
                Binding::Derived { node: id, names } => match path {
                    [one] => names.iter().position(|n| n == one).map_or_else(
                        || at(node, format!("`{}` has no column `{one}`", entry.alias)),
                        |i| Ok(ColumnId::Out(*id, i)),
                    ),
                    _ => at(
                        node,
                        format!(
                            "`{}` is a subquery: its columns have no fields",
                            entry.alias
                        ),
                    ),
                },
            }
        };
        if names.len() >= 2
            && let Some(entry) = scope.iter().find(|e| e.alias == names[0])
        {
            return resolve(entry, &names[1..]);
        }
        match scope {
            [] => at(node, "no column can be used here"),
            [only] => resolve(only, &names),
            _ => {
                // Subquery columns are known by name; event fields are not.
                let derived: Vec<&Entry> = scope
                    .iter()
                    .filter(|e| matches!(&e.binding, Binding::Derived { names: n, .. } if names.len() == 1 && n.iter().any(|x| x == names[0])))
                    .collect();
                if let ([one], true) = (
                    derived.as_slice(),
                    scope
                        .iter()
                        .all(|e| matches!(e.binding, Binding::Derived { .. })),
                ) {
                    return resolve(one, &names);
                }
                at(
                    node,
                    format!(
                        "`{}` is ambiguous with several sources: qualify it ({}.{})",
                        names.join("."),
                        scope[0].alias,
                        names.join(".")
                    ),
                )
            }
        }
    }

    pub(super) fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &[Entry],
        mut grouping: Option<&mut Grouping<'_>>,
    ) -> Result<Expr<ColumnId>> {
        use ast::Expr as A;
        if let Some(g) = grouping.as_deref_mut() {
            let text = e.to_string();
            if let Some(i) = g.group.iter().position(|x| *x == text) {
                return Ok(Expr::Col(ColumnId::Out(g.node, i)));
            }
            if let A::Identifier(_) | A::CompoundIdentifier(_) = e {
                return at(
                    e,
                    format!("`{e}` must appear in GROUP BY or be used in an aggregate"),
                );
            }
        }
        let sub = |x: &ast::Expr, planner: &mut Self, g: Option<&mut Grouping<'_>>| {
            planner.expr(x, scope, g).map(Box::new)
        };
        Ok(match e {
            A::Identifier(i) => Expr::Col(self.column(std::slice::from_ref(i), scope, e)?),
            A::CompoundIdentifier(parts) => Expr::Col(self.column(parts, scope, e)?),
            A::Nested(x) => return self.expr(x, scope, grouping),
            A::Value(v) => Expr::Lit(literal(v, e)?),
            A::BinaryOp { left, op, right } => {
                let op = match op {
                    ast::BinaryOperator::Plus => BinOp::Add,
                    ast::BinaryOperator::Minus => BinOp::Sub,
                    ast::BinaryOperator::Multiply => BinOp::Mul,
                    ast::BinaryOperator::Divide => BinOp::Div,
                    ast::BinaryOperator::Modulo => BinOp::Mod,
                    ast::BinaryOperator::Eq => BinOp::Eq,
                    ast::BinaryOperator::NotEq => BinOp::NotEq,
                    ast::BinaryOperator::Lt => BinOp::Lt,
                    ast::BinaryOperator::LtEq => BinOp::LtEq,
                    ast::BinaryOperator::Gt => BinOp::Gt,
                    ast::BinaryOperator::GtEq => BinOp::GtEq,
                    ast::BinaryOperator::And => BinOp::And,
                    ast::BinaryOperator::Or => BinOp::Or,
                    ast::BinaryOperator::StringConcat => BinOp::Concat,
                    other => {
                        return at(e, format!("the operator {other} is not supported in views"));
                    }
                };
                let l = sub(left, self, grouping.as_deref_mut())?;
                let r = sub(right, self, grouping)?;
                check_literal_types(op, &l, &r, e)?;
                Expr::Binary(op, l, r)
            }
            A::UnaryOp { op, expr } => match op {
                ast::UnaryOperator::Not => Expr::Not(sub(expr, self, grouping)?),
                ast::UnaryOperator::Minus => Expr::Neg(sub(expr, self, grouping)?),
                ast::UnaryOperator::Plus => return self.expr(expr, scope, grouping),
                other => return at(e, format!("the operator {other} is not supported in views")),
            },
            A::IsNull(x) => Expr::IsNull(sub(x, self, grouping)?, false),
            A::IsNotNull(x) => Expr::IsNull(sub(x, self, grouping)?, true),
            A::InList {
                expr,
                list,
                negated,
            } => {
                let x = sub(expr, self, grouping.as_deref_mut())?;
                let mut items = Vec::new();
                for i in list {
                    items.push(self.expr(i, scope, grouping.as_deref_mut())?);
                }
                Expr::InList(x, items, *negated)
            }
            A::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = sub(expr, self, grouping.as_deref_mut())?;
                let lo = sub(low, self, grouping.as_deref_mut())?;
                let hi = sub(high, self, grouping)?;
                let both = Expr::Binary(
                    BinOp::And,
                    Box::new(Expr::Binary(BinOp::GtEq, x.clone(), lo)),
                    Box::new(Expr::Binary(BinOp::LtEq, x, hi)),
                );
                if *negated {
                    Expr::Not(Box::new(both))
                } else {
                    both
                }
            }
            A::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => {
                let x = sub(expr, self, grouping.as_deref_mut())?;
                Expr::Like(x, sub(pattern, self, grouping)?, *negated)
            }
            A::ILike {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => {
                let lower = |x: Box<Expr<ColumnId>>| Box::new(Expr::Func(Func::Lower, vec![*x]));
                let x = sub(expr, self, grouping.as_deref_mut())?;
                let p = sub(pattern, self, grouping)?;
                Expr::Like(lower(x), lower(p), *negated)
            }
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let operand = operand
                    .as_ref()
                    .map(|o| sub(o, self, grouping.as_deref_mut()))
                    .transpose()?;
                let mut whens = Vec::new();
                for c in conditions {
                    let w = self.expr(&c.condition, scope, grouping.as_deref_mut())?;
                    let t = self.expr(&c.result, scope, grouping.as_deref_mut())?;
                    whens.push((w, t));
                }
                let otherwise = else_result
                    .as_ref()
                    .map(|o| sub(o, self, grouping))
                    .transpose()?;
                Expr::Case {
                    operand,
                    whens,
                    otherwise,
                }
            }
            A::Cast {
                kind: ast::CastKind::Cast | ast::CastKind::DoubleColon,
                expr,
                data_type,
                format: None,
            } => Expr::Cast(sub(expr, self, grouping)?, cast_type(data_type, e)?),
            A::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.expr(expr, scope, grouping.as_deref_mut())?];
                args.push(match substring_from {
                    Some(f) => self.expr(f, scope, grouping.as_deref_mut())?,
                    None => Expr::Lit(Datum::Int(1)),
                });
                if let Some(n) = substring_for {
                    args.push(self.expr(n, scope, grouping)?);
                }
                Expr::Func(Func::Substring, args)
            }
            A::Trim {
                expr,
                trim_where: None,
                trim_what: None,
                trim_characters: None,
            } => Expr::Func(Func::Trim, vec![self.expr(expr, scope, grouping)?]),
            A::Ceil {
                expr,
                field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
            } => Expr::Func(Func::Ceil, vec![self.expr(expr, scope, grouping)?]),
            A::Floor {
                expr,
                field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
            } => Expr::Func(Func::Floor, vec![self.expr(expr, scope, grouping)?]),
            A::Function(f) => return self.function(f, e, scope, grouping),
            other => return unsupported(other, "this expression"),
        })
    }

    fn function(
        &mut self,
        f: &ast::Function,
        node: &ast::Expr,
        scope: &[Entry],
        mut grouping: Option<&mut Grouping<'_>>,
    ) -> Result<Expr<ColumnId>> {
        if f.uses_odbc_syntax
            || !matches!(f.parameters, ast::FunctionArguments::None)
            || f.filter.is_some()
            || f.null_treatment.is_some()
            || f.over.is_some()
            || !f.within_group.is_empty()
        {
            return unsupported(node, "this form of function call");
        }
        let name = object_name(&f.name)?.to_lowercase();
        let list = match &f.args {
            ast::FunctionArguments::List(l) if l.clauses.is_empty() => l,
            ast::FunctionArguments::None => {
                return at(node, format!("{name} needs parentheses and arguments"));
            }
            _ => return unsupported(node, "this form of function call"),
        };
        let mut star = false;
        let mut args = Vec::new();
        for a in &list.args {
            match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => args.push(x),
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard) => star = true,
                _ => return unsupported(node, "this function argument"),
            }
        }
        let agg = match name.as_str() {
            "count" => Some(AggFunc::Count),
            "sum" => Some(AggFunc::Sum),
            "min" => Some(AggFunc::Min),
            "max" => Some(AggFunc::Max),
            "avg" => Some(AggFunc::Avg),
            _ => None,
        };
        if let Some(func) = agg {
            let Some(g) = grouping else {
                if scope.is_empty() {
                    return at(node, "aggregates cannot be nested");
                }
                return Err(SqlError {
                    message: NEEDS_GROUPING.into(),
                    line: 0,
                    column: 0,
                });
            };
            if list.duplicate_treatment.is_some() {
                return unsupported(node, "DISTINCT / ALL in an aggregate");
            }
            let arg = match (star, args.as_slice()) {
                (true, []) if func == AggFunc::Count => None,
                (false, [x]) => Some(self.expr(x, g.input, None).map_err(|e| {
                    if e.message == NEEDS_GROUPING {
                        SqlError {
                            message: "aggregates cannot be nested".into(),
                            ..e
                        }
                    } else {
                        e
                    }
                })?),
                _ => return at(node, format!("{name} takes one argument")),
            };
            let text = node.to_string();
            let i = match g.aggs.iter().position(|(t, _)| *t == text) {
                Some(i) => i,
                None => {
                    g.aggs.push((text, Agg { func, arg }));
                    g.aggs.len() - 1
                }
            };
            return Ok(Expr::Col(ColumnId::Out(g.node, g.group.len() + i)));
        }
        if star || list.duplicate_treatment.is_some() {
            return unsupported(node, "this function argument");
        }
        let Some((func, min, max)) = Func::named(&name) else {
            return at(
                &f.name,
                format!("unknown function {name}; docs/sql.md lists the functions views have"),
            );
        };
        if args.len() < min || args.len() > max {
            return at(
                node,
                format!(
                    "{name} takes {min}{} arguments, got {}",
                    if max == min {
                        String::new()
                    } else if max == usize::MAX {
                        " or more".into()
                    } else {
                        format!(" to {max}")
                    },
                    args.len()
                ),
            );
        }
        let mut out = Vec::new();
        for a in args {
            out.push(self.expr(a, scope, grouping.as_deref_mut())?);
        }
        Ok(Expr::Func(func, out))
    }
}

fn literal(v: &ast::ValueWithSpan, node: &ast::Expr) -> Result<Datum> {
    Ok(match &v.value {
        ast::Value::Null => Datum::Null,
        ast::Value::Boolean(b) => Datum::Bool(*b),
        ast::Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => Datum::Int(i),
            Err(_) => match n.parse::<f64>() {
                Ok(x) => Datum::Float(x),
                Err(_) => return at(node, format!("{n} is not a number")),
            },
        },
        ast::Value::SingleQuotedString(s) => Datum::str(s),
        _ => return unsupported(node, "this literal"),
    })
}

fn cast_type(t: &ast::DataType, node: &ast::Expr) -> Result<Type> {
    let name = t.to_string().to_ascii_uppercase();
    let base = name.split('(').next().unwrap_or("").trim();
    Ok(match base {
        "BOOLEAN" | "BOOL" => Type::Bool,
        "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "INT2" | "INT4" | "INT8" | "INT64" => Type::Int,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT4" | "FLOAT8" | "FLOAT64" | "REAL"
        | "NUMERIC" | "DECIMAL" => Type::Float,
        "TEXT" | "VARCHAR" | "CHARACTER VARYING" | "STRING" | "CHAR" | "CHARACTER" => Type::Text,
        _ => {
            return at(
                node,
                format!("cannot cast to {t}: views have boolean, bigint, double and text"),
            );
        }
    })
}

/// Literals of types an operator can never take are a mistake in the SQL, not in an
/// event: say so at once.
fn check_literal_types(
    op: BinOp,
    l: &Expr<ColumnId>,
    r: &Expr<ColumnId>,
    node: &ast::Expr,
) -> Result<()> {
    let (Expr::Lit(a), Expr::Lit(b)) = (l, r) else {
        let lit = match (l, r) {
            (Expr::Lit(x), _) | (_, Expr::Lit(x)) => x,
            _ => return Ok(()),
        };
        let numeric_op = matches!(
            op,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod
        );
        if numeric_op && matches!(lit, Datum::Str(_) | Datum::Bool(_)) {
            return at(
                node,
                format!(
                    "type mismatch: {op:?} cannot take {} `{lit}`",
                    lit.type_name()
                ),
            );
        }
        return Ok(());
    };
    if a.is_null() || b.is_null() {
        return Ok(());
    }
    let row: [crate::Datum; 0] = [];
    let bound = Expr::Binary(
        op,
        Box::new(Expr::Lit(a.clone())),
        Box::new(Expr::Lit(b.clone())),
    );
    match bound.eval(&row) {
        Ok(_) => Ok(()),
        Err(e) => at(node, format!("type mismatch: {e}")),
    }
}
