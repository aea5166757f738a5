//! Scalar expressions of the SQL subset and their evaluation over a row, with SQL's
//! NULL rules (three-valued logic, NULL in, NULL out) and errors for what cannot be
//! computed (a bad cast, a division by zero) instead of silent garbage.

use crate::datum::{Datum, Text};

/// An expression; `C` names a column (symbolic while planning, an index once bound).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr<C = usize> {
    Col(C),
    Lit(Datum),
    Not(Box<Expr<C>>),
    Neg(Box<Expr<C>>),
    Binary(BinOp, Box<Expr<C>>, Box<Expr<C>>),
    IsNull(Box<Expr<C>>, bool),
    InList(Box<Expr<C>>, Vec<Expr<C>>, bool),
    Like(Box<Expr<C>>, Box<Expr<C>>, bool),
    Case {
        operand: Option<Box<Expr<C>>>,
        whens: Vec<(Expr<C>, Expr<C>)>,
        otherwise: Option<Box<Expr<C>>>,
    },
    Cast(Box<Expr<C>>, Type),
    Func(Func, Vec<Expr<C>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Concat,
}

/// Types a CAST can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Bool,
    Int,
    Float,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Coalesce,
    NullIf,
    Upper,
    Lower,
    Length,
    Concat,
    Substring,
    Trim,
    Replace,
    Abs,
    Round,
    Floor,
    Ceil,
    Greatest,
    Least,
}

impl Func {
    /// The function a SQL name calls, with the argument counts it takes.
    pub fn named(name: &str) -> Option<(Func, usize, usize)> {
        Some(match name.to_ascii_lowercase().as_str() {
            "coalesce" => (Func::Coalesce, 1, usize::MAX),
            "nullif" => (Func::NullIf, 2, 2),
            "upper" => (Func::Upper, 1, 1),
            "lower" => (Func::Lower, 1, 1),
            "length" | "char_length" | "character_length" => (Func::Length, 1, 1),
            "concat" => (Func::Concat, 1, usize::MAX),
            "substring" | "substr" => (Func::Substring, 2, 3),
            "trim" | "btrim" => (Func::Trim, 1, 1),
            "replace" => (Func::Replace, 3, 3),
            "abs" => (Func::Abs, 1, 1),
            "round" => (Func::Round, 1, 2),
            "floor" => (Func::Floor, 1, 1),
            "ceil" | "ceiling" => (Func::Ceil, 1, 1),
            "greatest" => (Func::Greatest, 1, usize::MAX),
            "least" => (Func::Least, 1, usize::MAX),
            _ => return None,
        })
    }
}

/// Why a value could not be computed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

type Result<T> = std::result::Result<T, EvalError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(EvalError(msg.into()))
}

impl<C> Expr<C> {
    /// The same expression with its column references mapped.
    pub fn map_cols<D, E>(
        self,
        f: &mut impl FnMut(C) -> std::result::Result<D, E>,
    ) -> std::result::Result<Expr<D>, E> {
        let mut b = |e: Box<Expr<C>>| e.map_cols(f).map(Box::new);
        Ok(match self {
            Expr::Col(c) => Expr::Col(f(c)?),
            Expr::Lit(d) => Expr::Lit(d),
            Expr::Not(e) => Expr::Not(b(e)?),
            Expr::Neg(e) => Expr::Neg(b(e)?),
            Expr::Binary(op, l, r) => {
                let l = b(l)?;
                Expr::Binary(op, l, b(r)?)
            }
            Expr::IsNull(e, neg) => Expr::IsNull(b(e)?, neg),
            Expr::InList(e, list, neg) => {
                let e = b(e)?;
                let list = list
                    .into_iter()
                    .map(|x| x.map_cols(f))
                    .collect::<std::result::Result<_, _>>()?;
                Expr::InList(e, list, neg)
            }
            Expr::Like(e, p, neg) => {
                let e = b(e)?;
                Expr::Like(e, b(p)?, neg)
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                let operand = operand.map(&mut b).transpose()?;
                let whens = whens
                    .into_iter()
                    .map(|(w, t)| Ok((w.map_cols(f)?, t.map_cols(f)?)))
                    .collect::<std::result::Result<_, _>>()?;
                let otherwise = otherwise.map(|e| e.map_cols(f).map(Box::new)).transpose()?;
                Expr::Case {
                    operand,
                    whens,
                    otherwise,
                }
            }
            Expr::Cast(e, t) => Expr::Cast(b(e)?, t),
            Expr::Func(func, args) => Expr::Func(
                func,
                args.into_iter()
                    .map(|x| x.map_cols(f))
                    .collect::<std::result::Result<_, _>>()?,
            ),
        })
    }

    /// Every column it references.
    pub fn cols<'a>(&'a self, out: &mut Vec<&'a C>) {
        match self {
            Expr::Col(c) => out.push(c),
            Expr::Lit(_) => {}
            Expr::Not(e) | Expr::Neg(e) | Expr::IsNull(e, _) | Expr::Cast(e, _) => e.cols(out),
            Expr::Binary(_, l, r) | Expr::Like(l, r, _) => {
                l.cols(out);
                r.cols(out);
            }
            Expr::InList(e, list, _) => {
                e.cols(out);
                list.iter().for_each(|x| x.cols(out));
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.cols(out);
                }
                for (w, t) in whens {
                    w.cols(out);
                    t.cols(out);
                }
                if let Some(o) = otherwise {
                    o.cols(out);
                }
            }
            Expr::Func(_, args) => args.iter().for_each(|x| x.cols(out)),
        }
    }
}

/// The columns an expression reads: a row, or a join's two rows read as one.
pub trait Cols {
    fn col(&self, i: usize) -> &Datum;
}

impl Cols for [Datum] {
    fn col(&self, i: usize) -> &Datum {
        &self[i]
    }
}

/// Two rows read as their concatenation, without making it.
#[derive(Debug)]
pub struct Pair<'a>(pub &'a [Datum], pub &'a [Datum]);

impl Cols for Pair<'_> {
    fn col(&self, i: usize) -> &Datum {
        match self.0.get(i) {
            Some(d) => d,
            None => &self.1[i - self.0.len()],
        }
    }
}

impl Expr<usize> {
    pub fn eval(&self, row: &[Datum]) -> Result<Datum> {
        self.eval_in(row)
    }

    /// `eval` over any columns (a join's pair).
    pub fn eval_in<R: Cols + ?Sized>(&self, row: &R) -> Result<Datum> {
        match self {
            Expr::Col(i) => Ok(row.col(*i).clone()),
            Expr::Lit(d) => Ok(d.clone()),
            Expr::Not(e) => match e.eval_in(row)? {
                Datum::Null => Ok(Datum::Null),
                Datum::Bool(b) => Ok(Datum::Bool(!b)),
                other => err(format!("NOT needs a boolean, got {}", other.type_name())),
            },
            Expr::Neg(e) => match e.eval_in(row)? {
                Datum::Null => Ok(Datum::Null),
                Datum::Int(i) => i
                    .checked_neg()
                    .map(Datum::Int)
                    .ok_or_else(|| EvalError("integer out of range".into())),
                Datum::Float(x) => Ok(Datum::Float(-x)),
                other => err(format!("cannot negate {}", other.type_name())),
            },
            Expr::Binary(op, l, r) => binary(*op, l, r, row),
            Expr::IsNull(e, negated) => Ok(Datum::Bool(e.eval_in(row)?.is_null() != *negated)),
            Expr::InList(e, list, negated) => {
                let v = e.eval_in(row)?;
                if v.is_null() {
                    return Ok(Datum::Null);
                }
                let mut saw_null = false;
                for x in list {
                    match compare(&v, &x.eval_in(row)?)? {
                        Some(std::cmp::Ordering::Equal) => return Ok(Datum::Bool(!negated)),
                        None => saw_null = true,
                        Some(_) => {}
                    }
                }
                Ok(if saw_null {
                    Datum::Null
                } else {
                    Datum::Bool(*negated)
                })
            }
            Expr::Like(e, p, negated) => match (e.eval_in(row)?, p.eval_in(row)?) {
                (Datum::Null, _) | (_, Datum::Null) => Ok(Datum::Null),
                (Datum::Str(s), Datum::Str(p)) => Ok(Datum::Bool(like(&s, &p) != *negated)),
                (a, b) => err(format!(
                    "LIKE needs text, got {} and {}",
                    a.type_name(),
                    b.type_name()
                )),
            },
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                let subject = operand.as_ref().map(|o| o.eval_in(row)).transpose()?;
                for (when, then) in whens {
                    let w = when.eval_in(row)?;
                    let hit = match &subject {
                        Some(s) => compare(s, &w)? == Some(std::cmp::Ordering::Equal),
                        None => truthy(&w)?,
                    };
                    if hit {
                        return then.eval_in(row);
                    }
                }
                otherwise
                    .as_ref()
                    .map_or(Ok(Datum::Null), |o| o.eval_in(row))
            }
            Expr::Cast(e, t) => cast(e.eval_in(row)?, *t),
            Expr::Func(f, args) => func(*f, args, row),
        }
    }
}

/// Whether a WHERE / ON / CASE condition holds: NULL does not.
pub fn truthy(d: &Datum) -> Result<bool> {
    match d {
        Datum::Bool(b) => Ok(*b),
        Datum::Null => Ok(false),
        other => err(format!(
            "a condition must be boolean, got {}",
            other.type_name()
        )),
    }
}

/// SQL comparison: `None` when either side is NULL; numbers compare by value.
pub fn compare(a: &Datum, b: &Datum) -> Result<Option<std::cmp::Ordering>> {
    Ok(Some(match (a, b) {
        (Datum::Null, _) | (_, Datum::Null) => return Ok(None),
        (Datum::Int(x), Datum::Float(y)) => (*x as f64).total_cmp(y),
        (Datum::Float(x), Datum::Int(y)) => x.total_cmp(&(*y as f64)),
        (x, y) if std::mem::discriminant(x) == std::mem::discriminant(y) => x.cmp(y),
        (x, y) => {
            return err(format!(
                "cannot compare {} with {}",
                x.type_name(),
                y.type_name()
            ));
        }
    }))
}

fn binary<R: Cols + ?Sized>(op: BinOp, l: &Expr, r: &Expr, row: &R) -> Result<Datum> {
    use std::cmp::Ordering::*;
    if matches!(op, BinOp::And | BinOp::Or) {
        let a = logic(l.eval_in(row)?)?;
        // Short circuit where SQL's three-valued logic allows.
        match (op, a) {
            (BinOp::And, Some(false)) => return Ok(Datum::Bool(false)),
            (BinOp::Or, Some(true)) => return Ok(Datum::Bool(true)),
            _ => {}
        }
        let b = logic(r.eval_in(row)?)?;
        return Ok(match (a, b) {
            (Some(x), Some(y)) => Datum::Bool(if op == BinOp::And { x && y } else { x || y }),
            (_, Some(false)) if op == BinOp::And => Datum::Bool(false),
            (_, Some(true)) if op == BinOp::Or => Datum::Bool(true),
            _ => Datum::Null,
        });
    }
    let (a, b) = (l.eval_in(row)?, r.eval_in(row)?);
    let cmp = |want: &dyn Fn(std::cmp::Ordering) -> bool| -> Result<Datum> {
        Ok(compare(&a, &b)?.map_or(Datum::Null, |o| Datum::Bool(want(o))))
    };
    match op {
        BinOp::Eq => cmp(&|o| o == Equal),
        BinOp::NotEq => cmp(&|o| o != Equal),
        BinOp::Lt => cmp(&|o| o == Less),
        BinOp::LtEq => cmp(&|o| o != Greater),
        BinOp::Gt => cmp(&|o| o == Greater),
        BinOp::GtEq => cmp(&|o| o != Less),
        BinOp::Concat => match (&a, &b) {
            (Datum::Null, _) | (_, Datum::Null) => Ok(Datum::Null),
            _ => Ok(Datum::str(&format!("{a}{b}"))),
        },
        _ => arithmetic(op, a, b),
    }
}

fn logic(d: Datum) -> Result<Option<bool>> {
    match d {
        Datum::Null => Ok(None),
        Datum::Bool(b) => Ok(Some(b)),
        other => err(format!("AND / OR need booleans, got {}", other.type_name())),
    }
}

fn arithmetic(op: BinOp, a: Datum, b: Datum) -> Result<Datum> {
    let name = match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        _ => "%",
    };
    match (a, b) {
        (Datum::Null, _) | (_, Datum::Null) => Ok(Datum::Null),
        (Datum::Int(x), Datum::Int(y)) => {
            let v = match op {
                BinOp::Add => x.checked_add(y),
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div | BinOp::Mod if y == 0 => return err("division by zero"),
                BinOp::Div => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            v.map(Datum::Int)
                .ok_or_else(|| EvalError(format!("integer out of range in {x} {name} {y}")))
        }
        (a, b) => {
            let (Some(x), Some(y)) = (float(&a), float(&b)) else {
                return err(format!(
                    "cannot apply {name} to {} and {}",
                    a.type_name(),
                    b.type_name()
                ));
            };
            if matches!(op, BinOp::Div | BinOp::Mod) && y == 0.0 {
                return err("division by zero");
            }
            Ok(Datum::Float(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                _ => x % y,
            }))
        }
    }
}

fn float(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(i) => Some(*i as f64),
        Datum::Float(x) => Some(*x),
        _ => None,
    }
}

pub fn cast(d: Datum, t: Type) -> Result<Datum> {
    let fail = |d: &Datum, to: &str| err(format!("cannot cast {} {d} to {to}", d.type_name()));
    Ok(match (d, t) {
        (Datum::Null, _) => Datum::Null,
        (d @ Datum::Bool(_), Type::Bool)
        | (d @ Datum::Int(_), Type::Int)
        | (d @ Datum::Float(_), Type::Float) => d,
        (Datum::Int(i), Type::Float) => Datum::Float(i as f64),
        (Datum::Float(x), Type::Int) => {
            let r = x.round();
            if !r.is_finite() || r < i64::MIN as f64 || r > i64::MAX as f64 {
                return fail(&Datum::Float(x), "integer");
            }
            Datum::Int(r as i64)
        }
        (Datum::Int(i), Type::Bool) => Datum::Bool(i != 0),
        (Datum::Bool(b), Type::Int) => Datum::Int(i64::from(b)),
        (Datum::Str(s), Type::Text) => Datum::Str(s),
        (d, Type::Text) => Datum::str(&d.to_string()),
        (Datum::Str(s), Type::Int) => match s.trim().parse::<i64>() {
            Ok(i) => Datum::Int(i),
            Err(_) => return fail(&Datum::Str(s), "integer"),
        },
        (Datum::Str(s), Type::Float) => match s.trim().parse::<f64>() {
            Ok(x) => Datum::Float(x),
            Err(_) => return fail(&Datum::Str(s), "double"),
        },
        (Datum::Str(s), Type::Bool) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Datum::Bool(true),
            "false" | "f" | "no" | "n" | "0" => Datum::Bool(false),
            _ => return fail(&Datum::Str(s), "boolean"),
        },
        (d, Type::Int) => return fail(&d, "integer"),
        (d, Type::Float) => return fail(&d, "double"),
        (d, Type::Bool) => return fail(&d, "boolean"),
    })
}

fn text(d: &Datum, f: &str) -> Result<Option<Text>> {
    match d {
        Datum::Null => Ok(None),
        Datum::Str(s) => Ok(Some(s.clone())),
        other => err(format!("{f} needs text, got {}", other.type_name())),
    }
}

fn int_arg(d: &Datum, f: &str) -> Result<Option<i64>> {
    match d {
        Datum::Null => Ok(None),
        Datum::Int(i) => Ok(Some(*i)),
        other => err(format!("{f} needs an integer, got {}", other.type_name())),
    }
}

fn func<R: Cols + ?Sized>(f: Func, args: &[Expr], row: &R) -> Result<Datum> {
    // COALESCE evaluates lazily: a later argument may fail where an earlier one holds.
    if f == Func::Coalesce {
        for a in args {
            let v = a.eval_in(row)?;
            if !v.is_null() {
                return Ok(v);
            }
        }
        return Ok(Datum::Null);
    }
    let v: Vec<Datum> = args.iter().map(|a| a.eval_in(row)).collect::<Result<_>>()?;
    let str_fn = |name: &str, g: &dyn Fn(&str) -> String| -> Result<Datum> {
        Ok(text(&v[0], name)?.map_or(Datum::Null, |s| Datum::str(&g(&s))))
    };
    match f {
        Func::Coalesce => unreachable!("handled above"),
        Func::NullIf => Ok(
            if compare(&v[0], &v[1])? == Some(std::cmp::Ordering::Equal) {
                Datum::Null
            } else {
                v[0].clone()
            },
        ),
        Func::Upper => str_fn("UPPER", &|s| s.to_uppercase()),
        Func::Lower => str_fn("LOWER", &|s| s.to_lowercase()),
        Func::Trim => str_fn("TRIM", &|s| s.trim().to_string()),
        Func::Length => Ok(
            text(&v[0], "LENGTH")?.map_or(Datum::Null, |s| Datum::Int(s.chars().count() as i64))
        ),
        Func::Concat => Ok(Datum::str(
            &v.iter()
                .filter(|d| !d.is_null())
                .map(|d| d.to_string())
                .collect::<String>(),
        )),
        Func::Substring => {
            let Some(s) = text(&v[0], "SUBSTRING")? else {
                return Ok(Datum::Null);
            };
            let Some(from) = int_arg(&v[1], "SUBSTRING")? else {
                return Ok(Datum::Null);
            };
            let len = match v.get(2) {
                Some(d) => match int_arg(d, "SUBSTRING")? {
                    None => return Ok(Datum::Null),
                    Some(l) if l < 0 => return err("SUBSTRING: negative length"),
                    Some(l) => Some(l),
                },
                None => None,
            };
            // SQL counts from 1; characters before 1 count against the length.
            let start = from.max(1);
            let end = len.map(|l| from.saturating_add(l));
            let out: String = s
                .chars()
                .enumerate()
                .map(|(i, c)| (i as i64 + 1, c))
                .filter(|(i, _)| *i >= start && end.is_none_or(|e| *i < e))
                .map(|(_, c)| c)
                .collect();
            Ok(Datum::str(&out))
        }
        Func::Replace => {
            let (Some(s), Some(from), Some(to)) = (
                text(&v[0], "REPLACE")?,
                text(&v[1], "REPLACE")?,
                text(&v[2], "REPLACE")?,
            ) else {
                return Ok(Datum::Null);
            };
            Ok(Datum::str(&if from.is_empty() {
                s.to_string()
            } else {
                s.replace(&*from, &to)
            }))
        }
        Func::Abs => match &v[0] {
            Datum::Null => Ok(Datum::Null),
            Datum::Int(i) => i
                .checked_abs()
                .map(Datum::Int)
                .ok_or_else(|| EvalError("integer out of range".into())),
            Datum::Float(x) => Ok(Datum::Float(x.abs())),
            other => err(format!("ABS needs a number, got {}", other.type_name())),
        },
        Func::Round | Func::Floor | Func::Ceil => {
            let digits = match v.get(1) {
                Some(d) => match int_arg(d, "ROUND")? {
                    None => return Ok(Datum::Null),
                    Some(n) => n.clamp(-18, 18) as i32,
                },
                None => 0,
            };
            match &v[0] {
                Datum::Null => Ok(Datum::Null),
                Datum::Int(i) => Ok(Datum::Int(*i)),
                Datum::Float(x) => {
                    let scale = 10f64.powi(digits);
                    let g = match f {
                        Func::Round => (x * scale).round(),
                        Func::Floor => (x * scale).floor(),
                        _ => (x * scale).ceil(),
                    };
                    Ok(Datum::Float(g / scale))
                }
                other => err(format!(
                    "ROUND / FLOOR / CEIL need a number, got {}",
                    other.type_name()
                )),
            }
        }
        Func::Greatest | Func::Least => {
            let mut best: Option<Datum> = None;
            for d in v.into_iter().filter(|d| !d.is_null()) {
                best = Some(match best {
                    None => d,
                    Some(b) => {
                        let o = compare(&d, &b)?.expect("neither is null");
                        let take = if f == Func::Greatest {
                            o.is_gt()
                        } else {
                            o.is_lt()
                        };
                        if take { d } else { b }
                    }
                });
            }
            Ok(best.unwrap_or(Datum::Null))
        }
    }
}

/// SQL LIKE: `%` any run, `_` one character, `\` escapes.
fn like(s: &str, p: &str) -> bool {
    fn go(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(&s[i..], rest)),
            Some(('_', rest)) => !s.is_empty() && go(&s[1..], rest),
            Some(('\\', rest)) if !rest.is_empty() => {
                s.first() == Some(&rest[0]) && go(&s[1..], &rest[1..])
            }
            Some((c, rest)) => s.first() == Some(c) && go(&s[1..], rest),
        }
    }
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = p.chars().collect();
    go(&s, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(d: Datum) -> Box<Expr> {
        Box::new(Expr::Lit(d))
    }

    #[test]
    fn nulls_follow_three_valued_logic() {
        let and = Expr::Binary(BinOp::And, lit(Datum::Null), lit(Datum::Bool(false)));
        assert_eq!(and.eval(&[]).unwrap(), Datum::Bool(false));
        let or = Expr::Binary(BinOp::Or, lit(Datum::Null), lit(Datum::Bool(false)));
        assert_eq!(or.eval(&[]).unwrap(), Datum::Null);
        let eq = Expr::Binary(BinOp::Eq, lit(Datum::Int(2)), lit(Datum::Float(2.0)));
        assert_eq!(
            eq.eval(&[]).unwrap(),
            Datum::Bool(true),
            "numbers compare by value"
        );
        let inl = Expr::InList(
            lit(Datum::Int(1)),
            vec![Expr::Lit(Datum::Null), Expr::Lit(Datum::Int(2))],
            false,
        );
        assert_eq!(inl.eval(&[]).unwrap(), Datum::Null);
    }

    #[test]
    fn what_cannot_be_computed_is_an_error_naming_the_value() {
        let e = Expr::Cast(lit(Datum::str("12x")), Type::Int)
            .eval(&[])
            .unwrap_err();
        assert_eq!(e.0, "cannot cast text 12x to integer");
        let e = Expr::Binary(BinOp::Div, lit(Datum::Int(1)), lit(Datum::Int(0)))
            .eval(&[])
            .unwrap_err();
        assert_eq!(e.0, "division by zero");
        let e = Expr::Binary(BinOp::Add, lit(Datum::str("a")), lit(Datum::Int(1)))
            .eval(&[])
            .unwrap_err();
        assert!(e.0.contains("text and integer"), "{e}");
    }

    #[test]
    fn string_functions_and_like() {
        let call = |f, args: Vec<Datum>| {
            Expr::Func(f, args.into_iter().map(Expr::Lit).collect())
                .eval(&[])
                .unwrap()
        };
        assert_eq!(
            call(
                Func::Substring,
                vec![Datum::str("sluice"), Datum::Int(2), Datum::Int(3)]
            ),
            Datum::str("lui")
        );
        assert_eq!(
            call(
                Func::Substring,
                vec![Datum::str("abc"), Datum::Int(0), Datum::Int(2)]
            ),
            Datum::str("a")
        );
        assert_eq!(
            call(
                Func::Concat,
                vec![Datum::str("a"), Datum::Null, Datum::Int(1)]
            ),
            Datum::str("a1")
        );
        assert_eq!(
            call(Func::Coalesce, vec![Datum::Null, Datum::Int(3)]),
            Datum::Int(3)
        );
        assert_eq!(
            call(Func::Round, vec![Datum::Float(2.345), Datum::Int(2)]),
            Datum::Float(2.35)
        );
        assert!(like("shoe-42", "shoe%"));
        assert!(like("a_b", "a\\_b"));
        assert!(!like("axb", "a\\_b"));
        assert!(like("abc", "_b_"));
    }
}
