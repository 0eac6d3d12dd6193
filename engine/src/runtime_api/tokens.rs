//! Tokens: JWT signed with HS256 by the scope's key (generated once, kept 0600 in the scope's `secrets/`).
//!
//! An execution token names one attempt of one job (`execution_id`, `job_id`) and the scope, and expires with
//! the job's time limit (at most 2 h). A service token names a target and a service of the scope. A signature is
//! not enough: a token is accepted only while what it names is live in the server that issued it (the attempt
//! runs, the service runs), so ending either revokes it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The longest an execution token lives.
pub const MAX_EXECUTION_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// How long a service token's signature lasts; it is refused earlier once its service stops.
const SERVICE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `execution` or `service`.
    pub kind: String,
    /// The repository's scope.
    pub scope: String,
    /// The attempt (execution tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The job (execution tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The target (service tokens; execution tokens of a job with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The service (service tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
}

/// Signs and checks the scope's tokens.
pub struct Signer {
    scope: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("scope", &self.scope).finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Signer {
    /// A signer for `scope` with `secret` (the scope's key; not empty).
    pub fn new(scope: &str, secret: &[u8]) -> std::io::Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat"]);
        let bad =
            |e: jsonwebtoken::errors::Error| std::io::Error::other(format!("runtime API signing key: {e}"));
        Ok(Self {
            scope: scope.to_owned(),
            encoding: EncodingKey::from_secret(secret).map_err(bad)?,
            decoding: DecodingKey::from_secret(secret).map_err(bad)?,
            validation,
        })
    }

    /// The scope's signer, its key read from (or generated once into) the scope's `secrets/`, 0600.
    pub fn for_scope(scope_dir: &std::path::Path, scope: &str) -> std::io::Result<Self> {
        let key = crate::requirements::secrets::password(scope_dir, "runtime-api", "signing-key")?;
        Self::new(scope, key.as_bytes())
    }

    /// The scope tokens are issued for.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    fn sign(&self, claims: &Claims) -> String {
        // HS256 over serializable claims cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    /// A token for attempt `execution_id` of `job_id`, expiring after `lifetime` (at most 2 h).
    pub fn execution(
        &self,
        execution_id: &str,
        job_id: &str,
        target: Option<&str>,
        lifetime: Duration,
    ) -> String {
        let iat = now_secs();
        self.sign(&Claims {
            kind: "execution".into(),
            scope: self.scope.clone(),
            execution_id: Some(execution_id.to_owned()),
            job_id: Some(job_id.to_owned()),
            target: target.map(str::to_owned),
            service: None,
            iat,
            exp: iat + lifetime.min(MAX_EXECUTION_LIFETIME).as_secs().max(1),
        })
    }

    /// A token for `service` of `target`.
    pub fn service(&self, target: &str, service: &str) -> String {
        let iat = now_secs();
        self.sign(&Claims {
            kind: "service".into(),
            scope: self.scope.clone(),
            execution_id: None,
            job_id: None,
            target: Some(target.to_owned()),
            service: Some(service.to_owned()),
            iat,
            exp: iat + SERVICE_LIFETIME.as_secs(),
        })
    }

    /// The claims of a token this scope's key signed, unexpired; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?.claims;
        (claims.scope == self.scope).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_under_its_own_key_and_scope() {
        let signer = Signer::new("scope-a", b"0123456789abcdef0123456789abcdef").expect("key");
        let token = signer.execution("j1.1", "j1", Some("main"), Duration::from_secs(60));
        let claims = signer.verify(&token).expect("valid");
        assert_eq!(claims.execution_id.as_deref(), Some("j1.1"));
        assert_eq!(claims.exp - claims.iat, 60);
        let other_key = Signer::new("scope-a", b"another key entirely, 32 bytes!!").expect("key");
        assert!(other_key.verify(&token).is_none(), "forged");
        let other_scope = Signer::new("scope-b", b"0123456789abcdef0123456789abcdef").expect("key");
        assert!(other_scope.verify(&token).is_none(), "another scope");
        assert!(signer.verify("not.a.token").is_none());
        let long = signer.execution("j1.2", "j1", None, Duration::from_secs(24 * 3600));
        let claims = signer.verify(&long).expect("valid");
        assert_eq!(claims.exp - claims.iat, MAX_EXECUTION_LIFETIME.as_secs(), "at most 2 h");
    }

    #[test]
    fn an_expired_token_is_refused() {
        let signer = Signer::new("s", b"0123456789abcdef0123456789abcdef").expect("key");
        let past = Claims {
            kind: "execution".into(),
            scope: "s".into(),
            execution_id: Some("j.1".into()),
            job_id: Some("j".into()),
            target: None,
            service: None,
            iat: now_secs() - 100,
            exp: now_secs() - 10,
        };
        assert!(signer.verify(&signer.sign(&past)).is_none());
    }
}
