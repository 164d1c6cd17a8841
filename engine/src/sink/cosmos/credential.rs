//! Microsoft Entra ID sign-in for the Cosmos DB sink when no account key is given.
//!
//! On AKS the pod has a workload identity (a federated Kubernetes service-account token), on
//! other Azure hosts a managed identity, on a developer's machine `az login`. The default,
//! `auto`, tries them in that order at the first request and keeps the first that gives a
//! token, so the same image signs in wherever it runs; each can also be chosen alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};

use super::config::EntraCredential;
use super::CosmosSinkError;

/// The variable that the AKS workload identity webhook sets to the projected token's path; its
/// presence is what makes a workload identity worth trying.
const FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// The client id of a user-assigned managed identity, or of the workload identity.
const CLIENT_ID: &str = "AZURE_CLIENT_ID";

/// One way to sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID` and `AZURE_TENANT_ID`, as the AKS
    /// workload identity webhook sets them.
    WorkloadIdentity,
    /// The host's managed identity (system-assigned, or the user-assigned one of
    /// `AZURE_CLIENT_ID`).
    ManagedIdentity,
    /// The Azure CLI or Azure Developer CLI signed in on this machine.
    Developer,
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Link::WorkloadIdentity => "workload identity",
            Link::ManagedIdentity => "managed identity",
            Link::Developer => "developer credentials",
        }
    }
}

/// The ways `which` signs in, in order, given the environment `var`.
fn links(which: EntraCredential, var: &dyn Fn(&str) -> Option<String>) -> Vec<Link> {
    match which {
        EntraCredential::WorkloadIdentity => vec![Link::WorkloadIdentity],
        EntraCredential::ManagedIdentity => vec![Link::ManagedIdentity],
        EntraCredential::Developer => vec![Link::Developer],
        EntraCredential::Auto => {
            let mut links = Vec::with_capacity(3);
            if var(FEDERATED_TOKEN_FILE).is_some() {
                links.push(Link::WorkloadIdentity);
            }
            links.extend([Link::ManagedIdentity, Link::Developer]);
            links
        }
    }
}

/// The variable `name` when it is set and not blank.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

/// The credential that `which` names, built from the process environment.
pub(super) fn entra_credential(
    which: EntraCredential,
) -> Result<Arc<dyn TokenCredential>, CosmosSinkError> {
    let built = links(which, &env_var)
        .into_iter()
        .map(|link| build(link).map(|credential| (link.name(), credential)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Chain::new(built)))
}

fn build(link: Link) -> Result<Arc<dyn TokenCredential>, CosmosSinkError> {
    let failed =
        |e: azure_core::Error| CosmosSinkError::Credential(format!("{}: {e}", link.name()));
    Ok(match link {
        Link::WorkloadIdentity => {
            azure_identity::WorkloadIdentityCredential::new(None).map_err(failed)?
        }
        Link::ManagedIdentity => {
            let user_assigned_id = env_var(CLIENT_ID).map(azure_identity::UserAssignedId::ClientId);
            azure_identity::ManagedIdentityCredential::new(Some(
                azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id,
                    ..Default::default()
                },
            ))
            .map_err(failed)?
        }
        Link::Developer => azure_identity::DeveloperToolsCredential::new(None).map_err(failed)?,
    })
}

/// Credentials tried in order until one gives a token; the one that did is asked first from
/// then on, so a working sign-in costs no failed attempts at each token refresh.
#[derive(Debug)]
struct Chain {
    links: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    /// Index of the link that last gave a token.
    working: AtomicUsize,
}

impl Chain {
    fn new(links: Vec<(&'static str, Arc<dyn TokenCredential>)>) -> Self {
        Chain {
            links,
            working: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let first = self.working.load(Ordering::Relaxed);
        let order = (first..self.links.len()).chain(0..first);
        let mut failures = Vec::new();
        for index in order {
            let (name, credential) = &self.links[index];
            match credential.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    if index != first {
                        self.working.store(index, Ordering::Relaxed);
                        tracing::info!(credential = name, "Cosmos DB: signed in with Entra ID");
                    }
                    return Ok(token);
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no Microsoft Entra ID credential gave a token ({})",
                failures.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use azure_core::credentials::Secret;
    use azure_core::time::OffsetDateTime;

    use super::*;

    /// A credential that gives a token, or fails, and counts its calls.
    #[derive(Debug)]
    struct Fake {
        gives: bool,
        calls: AtomicU32,
    }

    impl Fake {
        fn new(gives: bool) -> Arc<Fake> {
            Arc::new(Fake {
                gives,
                calls: AtomicU32::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for Fake {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.gives {
                Ok(AccessToken::new(
                    Secret::new("token"),
                    OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
                ))
            } else {
                Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "not here",
                ))
            }
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn auto_tries_the_workload_identity_first_when_aks_provides_one() {
        let on_aks = |name: &str| (name == FEDERATED_TOKEN_FILE).then(|| "/var/run/token".into());
        assert_eq!(
            links(EntraCredential::Auto, &on_aks),
            [
                Link::WorkloadIdentity,
                Link::ManagedIdentity,
                Link::Developer
            ]
        );
        assert_eq!(
            links(EntraCredential::Auto, &|_| None),
            [Link::ManagedIdentity, Link::Developer]
        );
        assert_eq!(
            links(EntraCredential::WorkloadIdentity, &|_| None),
            [Link::WorkloadIdentity]
        );
    }

    #[test]
    fn the_first_credential_that_gives_a_token_is_kept() {
        let (workload, managed, developer) = (Fake::new(false), Fake::new(true), Fake::new(true));
        let chain = Chain::new(vec![
            (
                "workload identity",
                workload.clone() as Arc<dyn TokenCredential>,
            ),
            ("managed identity", managed.clone()),
            ("developer credentials", developer.clone()),
        ]);
        for _ in 0..3 {
            block_on(chain.get_token(&["scope"], None)).expect("a token");
        }
        assert_eq!(workload.calls.load(Ordering::Relaxed), 1, "tried once");
        assert_eq!(managed.calls.load(Ordering::Relaxed), 3, "kept");
        assert_eq!(developer.calls.load(Ordering::Relaxed), 0, "never needed");
    }

    #[test]
    fn when_none_gives_a_token_the_error_names_each() {
        let chain = Chain::new(vec![
            (
                "workload identity",
                Fake::new(false) as Arc<dyn TokenCredential>,
            ),
            ("developer credentials", Fake::new(false)),
        ]);
        let e = block_on(chain.get_token(&["scope"], None)).expect_err("no token");
        let message = e.to_string();
        assert!(message.contains("workload identity: not here"), "{message}");
        assert!(
            message.contains("developer credentials: not here"),
            "{message}"
        );
    }
}
