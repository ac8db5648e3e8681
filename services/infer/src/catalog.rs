//! What the service can serve and at what price, in memory, followed from the log:
//! `ModelRegistered` (training context) and `PricingPolicySet` (inference context).
//!
//! A request names a model as `<base>` or `<base>/<adapter>`, each part a model id or a name.
//! Names are labels, not keys: when two models register one name, the later registration
//! takes it (as a moving tag would), and the id always reaches either. An adapter is found
//! only under the base it was trained on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use provenant_bus::Delivery;
use provenant_bus::follow::Apply;
use provenant_events::money::Amount;
use provenant_events::proto::inference::v1::PricingPolicySet;
use provenant_events::proto::training::v1::{ModelKind, ModelRegistered};
use provenant_events::{Event as _, Upcasters};
use tracing::warn;

/// A registered model, as serving needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogModel {
    pub model_id: String,
    pub name: String,
    pub is_adapter: bool,
    /// For adapters: the base's model id.
    pub base_model_id: String,
    pub weights_sha256: String,
    pub config_sha256: String,
    pub owner_id: String,
    /// When the registration was appended (Unix seconds): OpenAI's `created`.
    pub created: i64,
}

/// A model's pricing: all three amounts in one currency and exponent, none negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub version: u64,
    pub per_request: Amount,
    pub per_1k_prompt_tokens: Amount,
    pub per_1k_output_tokens: Amount,
}

/// What a request's `model` resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub base: CatalogModel,
    pub adapter: Option<CatalogModel>,
}

impl Resolved {
    /// The model whose price applies: the adapter, or the base when it answers alone.
    pub fn served(&self) -> &CatalogModel {
        self.adapter.as_ref().unwrap_or(&self.base)
    }

    /// The name the response reports: `<base name>/<adapter name>` or `<base name>`.
    pub fn served_name(&self) -> String {
        match &self.adapter {
            Some(adapter) => format!("{}/{}", self.base.name, adapter.name),
            None => self.base.name.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    models: HashMap<String, CatalogModel>,
    base_names: HashMap<String, String>,
    /// (base id, adapter name) → adapter id.
    adapter_names: HashMap<(String, String), String>,
    prices: HashMap<String, Price>,
}

/// The followed catalogue; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    inner: Arc<RwLock<Inner>>,
}

impl Catalog {
    /// Adds a registered model; a second registration of one id changes nothing.
    pub fn register(&self, event: &ModelRegistered, created: i64) -> Result<(), String> {
        if event.model_id.is_empty() || event.name.is_empty() {
            return Err("a registration without a model id or name".to_owned());
        }
        let is_adapter = match event.kind() {
            ModelKind::Base => false,
            ModelKind::Adapter => true,
            ModelKind::Unspecified => return Err(format!("model {} has no kind", event.model_id)),
        };
        if is_adapter && event.base_model_id.is_empty() {
            return Err(format!("adapter {} names no base", event.model_id));
        }
        let sha = |blob: Option<&provenant_events::proto::common::v1::BlobRef>| blob.map(|blob| blob.sha256.clone()).unwrap_or_default();
        let model = CatalogModel {
            model_id: event.model_id.clone(),
            name: event.name.clone(),
            is_adapter,
            base_model_id: event.base_model_id.clone(),
            weights_sha256: sha(event.weights.as_ref()),
            config_sha256: sha(event.config.as_ref()),
            owner_id: event.owner.as_ref().map(|owner| owner.id.clone()).unwrap_or_default(),
            created,
        };
        if model.weights_sha256.is_empty() || model.config_sha256.is_empty() {
            return Err(format!("model {} names no weights or config", event.model_id));
        }
        let mut inner = self.write();
        if inner.models.contains_key(&model.model_id) {
            return Ok(());
        }
        if is_adapter {
            inner.adapter_names.insert((model.base_model_id.clone(), model.name.clone()), model.model_id.clone());
        } else {
            inner.base_names.insert(model.name.clone(), model.model_id.clone());
        }
        inner.models.insert(model.model_id.clone(), model);
        Ok(())
    }

    /// Sets a model's price; versions only move forward, and a repeated version changes
    /// nothing.
    pub fn set_price(&self, event: &PricingPolicySet) -> Result<(), String> {
        let price = price_of(event)?;
        let mut inner = self.write();
        match inner.prices.get(&event.model_id) {
            Some(current) if current.version >= price.version => Ok(()),
            _ => {
                inner.prices.insert(event.model_id.clone(), price);
                Ok(())
            }
        }
    }

    /// Resolves `<base>` or `<base>/<adapter>` (ids or names).
    pub fn resolve(&self, requested: &str) -> Option<Resolved> {
        let inner = self.read();
        let (base_part, adapter_part) = match requested.split_once('/') {
            Some((base, adapter)) => (base, Some(adapter)),
            None => (requested, None),
        };
        let base_id = inner.base_names.get(base_part).map_or(base_part, String::as_str);
        let base = inner.models.get(base_id).filter(|model| !model.is_adapter)?.clone();
        let adapter = match adapter_part {
            None => None,
            Some(part) => {
                let id = inner.adapter_names.get(&(base.model_id.clone(), part.to_owned())).map_or(part, String::as_str);
                Some(inner.models.get(id).filter(|model| model.is_adapter && model.base_model_id == base.model_id)?.clone())
            }
        };
        Some(Resolved { base, adapter })
    }

    /// A model by id.
    pub fn model(&self, model_id: &str) -> Option<CatalogModel> {
        self.read().models.get(model_id).cloned()
    }

    /// Everything servable, by served name: bases, and each adapter under its base.
    pub fn servable(&self) -> Vec<Resolved> {
        let inner = self.read();
        let mut list: Vec<Resolved> = inner
            .models
            .values()
            .filter_map(|model| {
                if !model.is_adapter {
                    return Some(Resolved { base: model.clone(), adapter: None });
                }
                let base = inner.models.get(&model.base_model_id)?;
                Some(Resolved { base: base.clone(), adapter: Some(model.clone()) })
            })
            .collect();
        list.sort_by(|left, right| (left.served_name(), &left.served().model_id).cmp(&(right.served_name(), &right.served().model_id)));
        list
    }

    /// The price that applies to `resolved`: the adapter's own, else its base's.
    pub fn price(&self, resolved: &Resolved) -> Option<Price> {
        let inner = self.read();
        resolved
            .adapter
            .as_ref()
            .and_then(|adapter| inner.prices.get(&adapter.model_id))
            .or_else(|| inner.prices.get(&resolved.base.model_id))
            .cloned()
    }

    /// A model's own pricing, if set.
    pub fn own_price(&self, model_id: &str) -> Option<Price> {
        self.read().prices.get(model_id).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Validates a pricing event: one currency and exponent for all three parts, none negative.
pub fn price_of(event: &PricingPolicySet) -> Result<Price, String> {
    let amount = |money: Option<&provenant_events::proto::common::v1::Money>, what: &str| {
        let money = money.ok_or_else(|| format!("{what} is missing"))?;
        let amount = Amount::from_proto(money).map_err(|error| format!("{what}: {error}"))?;
        if amount.minor_units < 0 { Err(format!("{what} is negative")) } else { Ok(amount) }
    };
    let per_request = amount(event.per_request.as_ref(), "per_request")?;
    let per_1k_prompt_tokens = amount(event.per_1k_prompt_tokens.as_ref(), "per_1k_prompt_tokens")?;
    let per_1k_output_tokens = amount(event.per_1k_output_tokens.as_ref(), "per_1k_output_tokens")?;
    for other in [&per_1k_prompt_tokens, &per_1k_output_tokens] {
        per_request.same_currency(other).map_err(|error| error.to_string())?;
    }
    if event.version == 0 {
        return Err("pricing versions start at 1".to_owned());
    }
    Ok(Price { version: event.version, per_request, per_1k_prompt_tokens, per_1k_output_tokens })
}

/// Feeds `ModelRegistered` into a [`Catalog`].
pub struct ModelFollower {
    pub catalog: Catalog,
    pub upcasters: Upcasters,
}

impl Apply for ModelFollower {
    fn apply(&mut self, delivery: &Delivery) {
        if delivery.envelope.event_type != ModelRegistered::TYPE {
            return;
        }
        let created = delivery.envelope.occurred_at.timestamp();
        let outcome = delivery
            .decode::<ModelRegistered>(&self.upcasters)
            .map_err(|error| error.to_string())
            .and_then(|event| self.catalog.register(&event, created));
        if let Err(reason) = outcome {
            warn!(sequence = delivery.stream_sequence, %reason, "model follower: registration skipped");
        }
    }
}

/// Feeds `PricingPolicySet` into a [`Catalog`].
pub struct PriceFollower {
    pub catalog: Catalog,
    pub upcasters: Upcasters,
}

impl Apply for PriceFollower {
    fn apply(&mut self, delivery: &Delivery) {
        if delivery.envelope.event_type != PricingPolicySet::TYPE {
            return;
        }
        let outcome = delivery
            .decode::<PricingPolicySet>(&self.upcasters)
            .map_err(|error| error.to_string())
            .and_then(|event| self.catalog.set_price(&event));
        if let Err(reason) = outcome {
            warn!(sequence = delivery.stream_sequence, %reason, "pricing follower: policy skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use provenant_events::proto::common::v1::{BlobRef, Money};

    use super::*;

    fn registered(id: &str, name: &str, base: Option<&str>) -> ModelRegistered {
        let blob = |sha: &str| Some(BlobRef { sha256: sha.to_owned(), ..Default::default() });
        ModelRegistered {
            model_id: id.to_owned(),
            name: name.to_owned(),
            kind: if base.is_some() { ModelKind::Adapter } else { ModelKind::Base }.into(),
            base_model_id: base.unwrap_or_default().to_owned(),
            weights: blob(&format!("w-{id}")),
            config: blob("c"),
            ..Default::default()
        }
    }

    fn money(units: &str) -> Option<Money> {
        Some(Money { currency: "EUR".into(), exponent: 2, minor_units: units.into() })
    }

    #[test]
    fn names_and_ids_resolve_and_adapters_only_under_their_base() {
        let catalog = Catalog::default();
        catalog.register(&registered("b1", "en", None), 0).expect("valid");
        catalog.register(&registered("b2", "other", None), 0).expect("valid");
        catalog.register(&registered("a1", "de", Some("b1")), 0).expect("valid");
        assert_eq!(catalog.resolve("en").map(|r| r.base.model_id), Some("b1".into()));
        assert_eq!(catalog.resolve("b1/de").and_then(|r| r.adapter).map(|a| a.model_id), Some("a1".into()));
        assert_eq!(catalog.resolve("en/a1").map(|r| r.served_name()), Some("en/de".into()));
        assert!(catalog.resolve("other/de").is_none(), "de belongs to en");
        assert!(catalog.resolve("a1").is_none(), "an adapter is not a base");
        assert!(catalog.resolve("en/missing").is_none());
        assert_eq!(catalog.servable().iter().map(Resolved::served_name).collect::<Vec<_>>(), ["en", "en/de", "other"]);
    }

    #[test]
    fn prices_move_forward_only_and_adapters_fall_back_to_their_base() {
        let catalog = Catalog::default();
        catalog.register(&registered("b1", "en", None), 0).expect("valid");
        catalog.register(&registered("a1", "de", Some("b1")), 0).expect("valid");
        let policy = |model: &str, version: u64, request: &str| PricingPolicySet {
            model_id: model.into(),
            version,
            per_request: money(request),
            per_1k_prompt_tokens: money("1"),
            per_1k_output_tokens: money("2"),
            set_by: None,
        };
        catalog.set_price(&policy("b1", 2, "10")).expect("valid");
        catalog.set_price(&policy("b1", 1, "99")).expect("an old version is ignored");
        let adapter = catalog.resolve("en/de").expect("resolves");
        assert_eq!(catalog.price(&adapter).map(|p| p.per_request.minor_units), Some(10));
        catalog.set_price(&policy("a1", 1, "20")).expect("valid");
        assert_eq!(catalog.price(&adapter).map(|p| p.per_request.minor_units), Some(20));
        assert!(catalog.set_price(&policy("b1", 3, "-1")).is_err(), "negative prices are refused");
        let mut mixed = policy("b1", 3, "1");
        mixed.per_1k_output_tokens = Some(Money { currency: "USD".into(), exponent: 2, minor_units: "1".into() });
        assert!(catalog.set_price(&mixed).is_err(), "one currency per policy");
    }
}
