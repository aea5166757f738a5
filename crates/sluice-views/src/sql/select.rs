//! Queries to relations: FROM and joins, WHERE, GROUP BY / HAVING, the SELECT list.

use sqlparser::ast;

use super::{
    Binding, Entry, Grouping, NEEDS_GROUPING, Planner, Result, at, conjuncts, object_name, owner,
    unsupported,
};
use crate::expr::Expr;
use crate::plan::{Column, ColumnId, JoinKind, Rel, ScanDraft, SourceInfo, SourceKind};

impl Planner<'_> {
    fn id(&mut self) -> usize {
        self.next_id += 1;
        self.next_id
    }

    /// A query: its relation (ending in a Map) and its output columns.
    pub(super) fn query(&mut self, q: &ast::Query) -> Result<(Rel<ColumnId>, Vec<Column>)> {
        if q.with.is_some() {
            return unsupported(q, "WITH");
        }
        if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
            return at(
                q,
                "ORDER BY / LIMIT are not supported in views: rows are kept by key (read them with ?limit=)",
            );
        }
        if !q.locks.is_empty()
            || q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            return unsupported(q, "this query clause");
        }
        let ast::SetExpr::Select(select) = q.body.as_ref() else {
            return unsupported(q.body.as_ref(), "UNION / INTERSECT / EXCEPT / VALUES");
        };
        self.select(select)
    }

    fn select(&mut self, s: &ast::Select) -> Result<(Rel<ColumnId>, Vec<Column>)> {
        if s.distinct.is_some() {
            return unsupported(s, "DISTINCT (use GROUP BY)");
        }
        if s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || !s.named_window.is_empty()
            || s.qualify.is_some()
            || s.value_table_mode.is_some()
        {
            return unsupported(s, "this SELECT clause");
        }
        let [from] = s.from.as_slice() else {
            return match s.from.get(1) {
                Some(second) => at(
                    &second.relation,
                    "comma joins are not supported: use JOIN ... ON",
                ),
                None => at(s, "a view needs FROM"),
            };
        };
        let (mut rel, scope) = self.from(from)?;
        if let Some(w) = &s.selection {
            let pred = self.expr(w, &scope, None)?;
            rel = Rel::Filter {
                input: Box::new(rel),
                pred,
            };
        }
        let group_by = match &s.group_by {
            ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
            other => return unsupported(other, "this GROUP BY"),
        };
        let grouped = !group_by.is_empty() || s.having.is_some();
        if !grouped {
            match self.items(&s.projection, &scope, None) {
                Ok((exprs, columns)) => {
                    let id = self.id();
                    return Ok((
                        Rel::Map {
                            id,
                            input: Box::new(rel),
                            exprs,
                        },
                        columns,
                    ));
                }
                Err(e) if e.message == NEEDS_GROUPING => {}
                Err(e) => return Err(e),
            }
        }
        // A grouped query: Aggregate (group values, then aggregates), HAVING, SELECT.
        let node = self.id();
        let mut group = Vec::new();
        let mut grouping = Grouping {
            node,
            input: &scope,
            group: Vec::new(),
            aggs: Vec::new(),
        };
        for g in group_by {
            if let ast::Expr::Value(_) = g {
                return at(
                    g,
                    "GROUP BY a position is not supported: repeat the expression",
                );
            }
            group.push(self.expr(g, &scope, None)?);
            grouping.group.push(g.to_string());
        }
        let (exprs, columns) = self.items(&s.projection, &[], Some(&mut grouping))?;
        let having = s
            .having
            .as_ref()
            .map(|h| self.expr(h, &[], Some(&mut grouping)))
            .transpose()?;
        let aggs = grouping.aggs.into_iter().map(|(_, a)| a).collect();
        let mut rel = Rel::Aggregate {
            id: node,
            input: Box::new(rel),
            group,
            aggs,
        };
        if let Some(pred) = having {
            rel = Rel::Filter {
                input: Box::new(rel),
                pred,
            };
        }
        let id = self.id();
        Ok((
            Rel::Map {
                id,
                input: Box::new(rel),
                exprs,
            },
            columns,
        ))
    }

    /// The SELECT list: an expression and a column per item, `*` spread.
    fn items(
        &mut self,
        items: &[ast::SelectItem],
        scope: &[Entry],
        mut grouping: Option<&mut Grouping<'_>>,
    ) -> Result<(Vec<Expr<ColumnId>>, Vec<Column>)> {
        let mut exprs = Vec::new();
        let mut columns: Vec<Column> = Vec::new();
        for item in items {
            let wildcard = |entries: Vec<&Entry>,
                            exprs: &mut Vec<Expr<ColumnId>>,
                            columns: &mut Vec<Column>| {
                for e in entries {
                    match &e.binding {
                        Binding::Scan(s) => {
                            exprs.push(Expr::Col(ColumnId::Path(*s, Vec::new())));
                            columns.push(Column {
                                name: format!("{}.*", e.alias),
                                spread: true,
                                hidden: false,
                            });
                        }
                        Binding::Derived { node, names } => {
                            for (i, n) in names.iter().enumerate() {
                                exprs.push(Expr::Col(ColumnId::Out(*node, i)));
                                columns.push(Column {
                                    name: n.clone(),
                                    spread: false,
                                    hidden: false,
                                });
                            }
                        }
                    }
                }
            };
            match item {
                ast::SelectItem::UnnamedExpr(e) => {
                    let name = match e {
                        ast::Expr::Identifier(i) => i.value.clone(),
                        ast::Expr::CompoundIdentifier(parts) => {
                            parts.last().map(|i| i.value.clone()).unwrap_or_default()
                        }
                        ast::Expr::Function(f) => object_name(&f.name)?.to_lowercase(),
                        other => {
                            return at(other, format!("name the expression `{other}` with AS"));
                        }
                    };
                    exprs.push(self.expr(e, scope, grouping.as_deref_mut())?);
                    columns.push(Column {
                        name,
                        spread: false,
                        hidden: false,
                    });
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    exprs.push(self.expr(expr, scope, grouping.as_deref_mut())?);
                    columns.push(Column {
                        name: alias.value.clone(),
                        spread: false,
                        hidden: false,
                    });
                }
                ast::SelectItem::Wildcard(_) if grouping.is_none() => {
                    wildcard(scope.iter().collect(), &mut exprs, &mut columns);
                }
                ast::SelectItem::QualifiedWildcard(
                    ast::SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) if grouping.is_none() => {
                    let alias = object_name(name)?;
                    let Some(entry) = scope.iter().find(|e| e.alias == alias) else {
                        return at(name, format!("no source is named `{alias}` in FROM"));
                    };
                    wildcard(vec![entry], &mut exprs, &mut columns);
                }
                other => return unsupported(other, "this SELECT item"),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (c, item) in columns.iter().zip(items) {
            if !c.spread && !seen.insert(c.name.clone()) {
                return at(
                    item,
                    format!("two columns are named `{}`: rename one with AS", c.name),
                );
            }
        }
        Ok((exprs, columns))
    }

    /// FROM with its joins: the relation and the names it brings into scope.
    fn from(&mut self, from: &ast::TableWithJoins) -> Result<(Rel<ColumnId>, Vec<Entry>)> {
        let (mut rel, first) = self.factor(&from.relation)?;
        let mut scope = vec![first];
        for join in &from.joins {
            let (right, entry) = self.factor(&join.relation)?;
            if scope.iter().any(|e| e.alias == entry.alias) {
                return at(
                    &join.relation,
                    format!(
                        "`{}` is already a name in FROM: give one of them an alias",
                        entry.alias
                    ),
                );
            }
            let (kind, constraint) = match &join.join_operator {
                ast::JoinOperator::Join(c) | ast::JoinOperator::Inner(c) => (JoinKind::Inner, c),
                ast::JoinOperator::Left(c) | ast::JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
                _ => return unsupported(join, "this join (INNER and LEFT joins are)"),
            };
            let ast::JoinConstraint::On(on) = constraint else {
                return at(&join.relation, "a join needs ON with equalities");
            };
            let left_len = scope.len();
            scope.push(entry);
            let mut left_keys = Vec::new();
            let mut right_keys = Vec::new();
            let mut residual = Vec::new();
            for conjunct in conjuncts(on) {
                let side = |e: &Expr<ColumnId>| -> Option<bool> {
                    let mut cols = Vec::new();
                    e.cols(&mut cols);
                    let sides: Vec<bool> = cols
                        .iter()
                        .map(|c| owner(&scope, c).is_some_and(|i| i >= left_len))
                        .collect();
                    match (sides.iter().all(|r| *r), sides.iter().all(|r| !*r)) {
                        _ if sides.is_empty() => None,
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    }
                };
                if let ast::Expr::BinaryOp {
                    left,
                    op: ast::BinaryOperator::Eq,
                    right,
                } = conjunct
                {
                    let (l, r) = (
                        self.expr(left, &scope, None)?,
                        self.expr(right, &scope, None)?,
                    );
                    match (side(&l), side(&r)) {
                        (Some(false), Some(true)) => {
                            left_keys.push(l);
                            right_keys.push(r);
                            continue;
                        }
                        (Some(true), Some(false)) => {
                            left_keys.push(r);
                            right_keys.push(l);
                            continue;
                        }
                        _ => {}
                    }
                }
                if kind == JoinKind::Left {
                    return at(
                        conjunct,
                        format!(
                            "LEFT JOIN ... ON takes equalities between the two sides only; `{conjunct}` is not one"
                        ),
                    );
                }
                residual.push(self.expr(conjunct, &scope, None)?);
            }
            if left_keys.is_empty() {
                return at(
                    on,
                    "a join needs at least one equality between the two sides (an equi-join)",
                );
            }
            rel = Rel::Join {
                left: Box::new(rel),
                right: Box::new(right),
                kind,
                left_keys,
                right_keys,
            };
            for pred in residual {
                rel = Rel::Filter {
                    input: Box::new(rel),
                    pred,
                };
            }
        }
        Ok((rel, scope))
    }

    fn factor(&mut self, f: &ast::TableFactor) -> Result<(Rel<ColumnId>, Entry)> {
        match f {
            ast::TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version: None,
                with_ordinality: false,
                partitions,
                json_path: None,
                sample: None,
                index_hints,
            } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
                let (named, event_type, info) = match args {
                    None => {
                        let named = object_name(name)?;
                        match self.catalog.resolve(&named) {
                            Ok((event_type, info)) => (named, event_type, info),
                            Err(why) => return at(name, why),
                        }
                    }
                    Some(args) => self.stream_of(f, name, args)?,
                };
                let alias = match alias {
                    Some(a) if !a.columns.is_empty() => {
                        return unsupported(a, "column names in an alias");
                    }
                    Some(a) => a.name.value.clone(),
                    None => named,
                };
                self.scans
                    .push(ScanDraft::new(event_type, alias.clone(), info));
                let s = self.scans.len() - 1;
                Ok((
                    Rel::Scan(s),
                    Entry {
                        alias,
                        binding: Binding::Scan(s),
                    },
                ))
            }
            ast::TableFactor::Derived {
                lateral: false,
                subquery,
                alias,
                sample: None,
            } => {
                let Some(alias) = alias else {
                    return at(f, "a subquery in FROM needs an alias");
                };
                let (rel, columns) = self.query(subquery)?;
                if let Some(c) = columns.iter().find(|c| c.spread) {
                    return at(
                        subquery.as_ref(),
                        format!(
                            "`{}` in a subquery is not supported: name its columns",
                            c.name
                        ),
                    );
                }
                let Rel::Map { id, .. } = &rel else {
                    unreachable!("a query ends in its projection")
                };
                let node = *id;
                Ok((
                    rel,
                    Entry {
                        alias: alias.name.value.clone(),
                        binding: Binding::Derived {
                            node,
                            names: columns.into_iter().map(|c| c.name).collect(),
                        },
                    },
                ))
            }
            other => unsupported(other, "this kind of FROM item"),
        }
    }

    /// `STREAM(name)`: an event type of another category than `data` read as a stream
    /// (every event a new row) though it has a key. The view then keeps no table of
    /// its events: orders counted per minute need the minutes, not every order.
    fn stream_of(
        &self,
        f: &ast::TableFactor,
        function: &ast::ObjectName,
        args: &ast::TableFunctionArgs,
    ) -> Result<(String, String, SourceInfo)> {
        if !object_name(function)?.eq_ignore_ascii_case("stream") {
            return unsupported(f, "a table function other than STREAM(event_type)");
        }
        let one_name = "STREAM takes one event type's name: STREAM(\"shop.order\")";
        let arg = match (&args.args[..], &args.settings) {
            ([ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))], None) => e,
            _ => return at(f, one_name),
        };
        let named = match arg {
            ast::Expr::Identifier(i) => i.value.clone(),
            ast::Expr::CompoundIdentifier(parts) => parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join("."),
            _ => return at(f, one_name),
        };
        let (event_type, mut info) = match self.catalog.resolve(&named) {
            Ok(found) => found,
            Err(why) => return at(f, why),
        };
        if info.data_change {
            return at(
                f,
                format!(
                    "`{named}` holds data change events: it is read as a table (a stream would lose its deletes)"
                ),
            );
        }
        info.kind = SourceKind::Stream;
        Ok((named, event_type, info))
    }
}
