//! Who is looking at a page: the signed-in caller and the CSRF token its forms carry. The
//! session guard ([`super::access`]) makes one; layouts and pages read it.

use axum::http::Method;

use crate::service::access as roles;
use crate::service::Caller;

/// The signed-in user of a page, and the CSRF token its forms carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    pub csrf: String,
}

impl Viewer {
    /// Whether this user may do what `method path` of the API does.
    pub fn may(&self, method: &str, path: &str) -> bool {
        let m = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        roles::rule(&m, path).is_some_and(|a| roles::allows(a, self.caller.user.role))
    }
}
