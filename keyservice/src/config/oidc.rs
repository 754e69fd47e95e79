//! `[namespaces.<name>.oidc]`: the identity provider whose ID tokens a namespace
//! requires on `/connect` and `/erase`, read and checked.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, seconds};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOidc {
    issuer: String,
    audience: String,
    user_claim: Option<String>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    algorithms: Option<Vec<String>>,
    leeway_secs: Option<u64>,
    refetch_secs: Option<u64>,
    erase_max_age_secs: Option<u64>,
}

impl FileOidc {
    pub(super) fn validate(self, field: &str) -> Result<crate::oidc::Oidc, ConfigError> {
        if self.issuer.is_empty() {
            return Err(invalid(format!("{field}.issuer"), "must name the identity provider (its `iss`)"));
        }
        if self.audience.is_empty() {
            return Err(invalid(format!("{field}.audience"), "must name the client id the tokens are issued for"));
        }
        let algorithms = match self.algorithms {
            None => crate::oidc::DEFAULT_ALGORITHMS.to_vec(),
            Some(names) => {
                let mut algorithms = Vec::new();
                for name in names {
                    let algorithm: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
                        invalid(format!("{field}.algorithms"), format!("{name} is not a JWS algorithm"))
                    })?;
                    if matches!(
                        algorithm,
                        jsonwebtoken::Algorithm::HS256
                            | jsonwebtoken::Algorithm::HS384
                            | jsonwebtoken::Algorithm::HS512
                    ) {
                        return Err(invalid(
                            format!("{field}.algorithms"),
                            "HMAC algorithms are refused: the token must be signed by the provider's private key",
                        ));
                    }
                    algorithms.push(algorithm);
                }
                if algorithms.is_empty() {
                    return Err(invalid(format!("{field}.algorithms"), "must name at least one algorithm"));
                }
                algorithms
            }
        };
        let leeway_secs = match self.leeway_secs {
            None => 60,
            Some(secs) if secs <= 300 => secs,
            Some(_) => return Err(invalid(format!("{field}.leeway_secs"), "must be at most 300")),
        };
        let (source, keys) = match (self.jwks_file, self.jwks_url) {
            (Some(file), None) => {
                let keys =
                    crate::oidc::read_jwks(&file).map_err(|reason| invalid(format!("{field}.jwks_file"), reason))?;
                (crate::oidc::JwksSource::File(file), keys)
            }
            (None, Some(url)) => {
                let uri: http::Uri = url.parse().map_err(|_| invalid(format!("{field}.jwks_url"), "is not a URL"))?;
                let loopback = uri.host().is_some_and(|host| {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
                });
                match uri.scheme_str() {
                    Some("https") => {}
                    Some("http") if loopback => {}
                    _ => {
                        return Err(invalid(
                            format!("{field}.jwks_url"),
                            "must be https:// (http:// only to a loopback host)",
                        ));
                    }
                }
                (crate::oidc::JwksSource::Url(url), jsonwebtoken::jwk::JwkSet { keys: Vec::new() })
            }
            _ => return Err(invalid(field, "needs exactly one of jwks_file or jwks_url")),
        };
        Ok(crate::oidc::Oidc::new(
            self.issuer,
            self.audience,
            self.user_claim.unwrap_or_else(|| "sub".to_owned()),
            source,
            keys,
            algorithms,
            leeway_secs,
            seconds(
                self.refetch_secs,
                &format!("{field}.refetch_secs"),
                crate::oidc::MIN_REFETCH,
                Duration::from_secs(3600),
            )?,
            seconds(
                self.erase_max_age_secs,
                &format!("{field}.erase_max_age_secs"),
                crate::oidc::ERASE_MAX_AGE,
                Duration::from_secs(3600),
            )?,
        ))
    }
}
