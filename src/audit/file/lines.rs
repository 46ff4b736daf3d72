//! The events a log is given, serialised by the requests that made them ([`EventLines`]).

use crate::audit::chain::{
    CHAIN_ANNOTATION, CHECKPOINT_ANNOTATION, LOST_EVENTS_ANNOTATION, LOST_REASON_ANNOTATION,
    SEQ_ANNOTATION, SIGNATURE_ANNOTATION,
};
use crate::audit::event::Event;

/// The annotations only the log sets: left out of the events it is given.
const RESERVED: [&str; 6] = [
    CHAIN_ANNOTATION,
    SEQ_ANNOTATION,
    CHECKPOINT_ANNOTATION,
    SIGNATURE_ANNOTATION,
    LOST_EVENTS_ANNOTATION,
    LOST_REASON_ANNOTATION,
];

/// Events serialised by the requests that produced them, back to back, waiting for the chain's
/// annotations (which only the writer can know): the work of encoding is spread over the
/// callers, and the writer only splices, hashes and writes. Cleared and reused, not freed, by
/// the callers and the writer.
#[derive(Debug, Default)]
pub(crate) struct EventLines {
    /// The events' JSON one after the other, each without the chain, sequence, checkpoint or
    /// signature annotation; an event's `annotations` object, when present, is its last member.
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`, and whether it has an `annotations` object.
    ends: Vec<(usize, bool)>,
}

impl EventLines {
    /// Serialises `ev` after the events already held, without the annotations only the log
    /// may set.
    pub(crate) fn push(&mut self, ev: &Event) {
        let annotated = ev.write_json(&mut self.bytes, &RESERVED);
        debug_assert!(
            !annotated || self.bytes.ends_with(b"}}"),
            "annotations come last"
        );
        self.ends.push((self.bytes.len(), annotated));
    }

    /// Copies `other`'s events after the ones held.
    pub(crate) fn append(&mut self, other: &EventLines) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends
            .extend(other.ends.iter().map(|&(end, a)| (base + end, a)));
    }

    /// How many events are held.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Forgets the events, keeping the memory for the next ones (up to a limit, so that one
    /// burst does not hold megabytes for good).
    pub(crate) fn clear(&mut self) {
        const KEEP: usize = 1 << 20;
        if self.bytes.capacity() > KEEP {
            self.bytes = Vec::new();
            self.ends = Vec::new();
        }
        self.bytes.clear();
        self.ends.clear();
    }

    /// Each event's JSON and whether it has an `annotations` object.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], bool)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(end, _)| end));
        starts
            .zip(&self.ends)
            .map(|(start, &(end, annotated))| (&self.bytes[start..end], annotated))
    }
}

/// One event for [`LogFile::write_lines`] (tests).
#[cfg(test)]
pub(crate) struct EventLine(pub(super) EventLines);

#[cfg(test)]
impl EventLine {
    /// Serialises `ev` without the annotations only the log may set.
    pub(crate) fn of(ev: &Event) -> Self {
        let mut lines = EventLines::default();
        lines.push(ev);
        EventLine(lines)
    }
}
