//! The interaction event as the native core sees it (schema: `freshrec/events.py`).

/// The event types of the schema, in the order of `freshrec.events.EVENT_TYPES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventType {
    View = 0,
    AddToCart = 1,
    Purchase = 2,
    Favourite = 3,
    RecImpression = 4,
    RecClick = 5,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::View,
        EventType::AddToCart,
        EventType::Purchase,
        EventType::Favourite,
        EventType::RecImpression,
        EventType::RecClick,
    ];

    /// The schema's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
            EventType::Favourite => "favourite",
            EventType::RecImpression => "rec_impression",
            EventType::RecClick => "rec_click",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        Some(match name {
            "view" => EventType::View,
            "add_to_cart" => EventType::AddToCart,
            "purchase" => EventType::Purchase,
            "favourite" => EventType::Favourite,
            "rec_impression" => EventType::RecImpression,
            "rec_click" => EventType::RecClick,
            _ => return None,
        })
    }

    pub fn from_index(index: u8) -> Option<EventType> {
        EventType::ALL.get(index as usize).copied()
    }

    /// Events that express interest in an item and so train the model and fill the user's
    /// window (`freshrec.events.INTERACTION_TYPES`): all but the impression.
    pub fn is_interaction(self) -> bool {
        self != EventType::RecImpression
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_schema_order() {
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(EventType::from_name(t.name()), Some(*t));
            assert_eq!(EventType::from_index(i as u8), Some(*t));
        }
        assert_eq!(EventType::from_name("click"), None);
        assert!(!EventType::RecImpression.is_interaction());
        assert!(EventType::RecClick.is_interaction());
    }
}
