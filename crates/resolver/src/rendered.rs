//! What an embedder renders from a cached value, kept with the value: the
//! internal API keeps its JSON for a cached tenant and for a remembered
//! session here, so the hot routes do not serialise the same thing again.
//! Dropped with the value (a changed tenant, an expired token).

use std::any::Any;
use std::sync::{Arc, OnceLock};

/// One rendering, made on first use. A process renders one type per kind
/// of value (asking for another type panics).
#[derive(Clone, Default)]
pub struct Rendered(OnceLock<Arc<dyn Any + Send + Sync>>);

impl Rendered {
    /// The rendering, made by `render` if there is none yet.
    pub fn get_or_render<T: Any + Send + Sync>(&self, render: impl FnOnce() -> T) -> &T {
        self.0
            .get_or_init(|| Arc::new(render()))
            .downcast_ref()
            .expect("one type is rendered per kind of cached value")
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Rendered(..)"
        } else {
            "Rendered(none yet)"
        })
    }
}

/// A rendering is made from its value and says nothing of its own: two
/// values are equal whatever was rendered from them.
impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_once_and_keeps_the_first() {
        let slot = Rendered::default();
        let mut calls = 0;
        assert_eq!(
            *slot.get_or_render(|| {
                calls += 1;
                7u32
            }),
            7
        );
        assert_eq!(*slot.get_or_render(|| 8u32), 7);
        assert_eq!(calls, 1);
        // A clone shares what was rendered.
        assert_eq!(*slot.clone().get_or_render(|| 9u32), 7);
    }
}
