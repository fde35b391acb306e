//! Which rule of one rule set (the base rules, or a tier) a method and path fall under: a
//! `matchit` router per method that some rule names, and one for the other methods.

use http::Method;

use super::Rule;

/// A route of a rule set, as its routers are built from it.
pub(super) struct Route {
    pub(super) pattern: String,
    /// The methods it is limited to; `None` for all.
    pub(super) methods: Option<Vec<Method>>,
    /// The rule's position in `Rules::rules`.
    pub(super) index: usize,
}

/// A route whose pattern cannot go into a router.
pub(super) struct Conflict {
    /// The route's position in the routes given.
    pub(super) route: usize,
    pub(super) kind: ConflictKind,
}

pub(super) enum ConflictKind {
    /// It overlaps another pattern: the position of the route with that pattern, if known.
    With {
        pattern: String,
        route: Option<usize>,
    },
    /// The pattern is malformed.
    Other(String),
}

/// One rule set's routers and its default rule.
pub(super) struct RuleSet {
    default: usize,
    /// One router per method some rule names, holding the rules that apply to that method
    /// (see [`Rule::applies_to`]), method-less ones included.
    by_method: Vec<(Method, matchit::Router<usize>)>,
    /// The method-less rules, for methods no rule names; `None` when there are none. An
    /// empty router is not asked: its root compares the path with an empty prefix, which
    /// some `memcmp`s (AVX-512, reading through a masked load at a dangling pointer) make
    /// cost more than the rest of the decision.
    any_method: Option<matchit::Router<usize>>,
    /// Whether HEAD is looked up as GET: when rules name GET and none names HEAD, GET's
    /// router is HEAD's, so it is not built twice.
    head_is_get: bool,
}

impl RuleSet {
    /// The routers of `routes`, whose rules are in `rules`; `default` is the index of the
    /// set's default rule. Marks the GET rules that HEAD requests fall under.
    pub(super) fn build(
        default: usize,
        routes: &[Route],
        rules: &mut [Rule],
    ) -> Result<Self, Conflict> {
        let insert_all = |filter: &dyn Fn(&Route) -> bool| {
            let mut router = matchit::Router::new();
            for (position, _) in routes.iter().enumerate().filter(|(_, r)| filter(r)) {
                insert(&mut router, routes, position)?;
            }
            Ok::<_, Conflict>(router)
        };
        let names = |route: &Route, method: &Method| {
            route
                .methods
                .as_ref()
                .is_none_or(|methods| methods.contains(method))
        };

        let mut named_methods: Vec<Method> = routes
            .iter()
            .flat_map(|r| r.methods.iter().flatten().cloned())
            .filter(|m| *m != Method::HEAD)
            .collect();
        named_methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        named_methods.dedup();

        let any_method = if routes.iter().any(|r| r.methods.is_none()) {
            Some(insert_all(&|r| r.methods.is_none())?)
        } else {
            None
        };
        let mut by_method = named_methods
            .iter()
            .map(|method| Ok((method.clone(), insert_all(&|r| names(r, method))?)))
            .collect::<Result<Vec<_>, Conflict>>()?;

        // HEAD: the routes that name it (or no method), then those that name GET, each
        // unless a route for the same path (the same pattern, up to parameter names) is
        // there already. Without routes naming HEAD, that is GET's router.
        let get_only = |r: &Route| {
            r.methods
                .as_ref()
                .is_some_and(|m| m.contains(&Method::GET) && !m.contains(&Method::HEAD))
        };
        let names_head = |r: &Route| r.methods.is_some() && names(r, &Method::HEAD);
        let head_is_get = !routes.iter().any(names_head) && named_methods.contains(&Method::GET);
        if head_is_get {
            for route in routes.iter().filter(|r| get_only(r)) {
                rules[route.index].head_as_get = true;
            }
        } else if routes.iter().any(names_head) {
            let mut head = insert_all(&|r| names(r, &Method::HEAD))?;
            for route in routes.iter().filter(|r| get_only(r)) {
                // A conflict can only be with a route naming HEAD: the rest share GET's
                // router.
                if head.insert(route.pattern.as_str(), route.index).is_ok() {
                    rules[route.index].head_as_get = true;
                }
            }
            by_method.push((Method::HEAD, head));
        }
        Ok(Self {
            default,
            by_method,
            any_method,
            head_is_get,
        })
    }

    /// The index of the rule for `method` (its name, as sent) and `path`: the most specific
    /// pattern that matches `path`'s normal form (see [`super::path`]) among the rules for
    /// that method, else the default.
    pub(super) fn lookup(&self, method: &str, path: &str) -> usize {
        let method = if self.head_is_get && method == "HEAD" {
            "GET"
        } else {
            method
        };
        let router = match self.by_method.iter().find(|(m, _)| m.as_str() == method) {
            Some((_, router)) => router,
            None => match &self.any_method {
                Some(router) => router,
                None => return self.default,
            },
        };
        router
            .at(&super::path::normalize(path))
            .map_or(self.default, |matched| *matched.value)
    }

    /// The index of the set's default rule.
    pub(super) fn default(&self) -> usize {
        self.default
    }
}

/// Inserts the route at `position` into `router`.
fn insert(
    router: &mut matchit::Router<usize>,
    routes: &[Route],
    position: usize,
) -> Result<(), Conflict> {
    let route = &routes[position];
    router
        .insert(route.pattern.as_str(), route.index)
        .map_err(|err| Conflict {
            route: position,
            kind: match err {
                matchit::InsertError::Conflict { with } => ConflictKind::With {
                    route: routes.iter().position(|r| r.pattern == with),
                    pattern: with,
                },
                other => ConflictKind::Other(other.to_string()),
            },
        })
}
