//! How far each project's copies are from being in place in the cluster a plan was made for: what
//! the Project's condition says, and what tells the management cluster that a project moved to
//! its own cluster may let go of its copies there.

use super::{Action, ActionKind};
use crate::keys::{self, ProjectId};
use crate::world::World;
use std::collections::BTreeMap;

/// One project's copies, by what the plan still has to do for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Copies still to be created, updated or replaced.
    pub pending: usize,
    /// Copies that cannot be written (a secret of the name is not ours to replace).
    pub conflicts: usize,
}

impl Progress {
    /// Every copy the project wants is there and exact.
    pub fn in_place(&self) -> bool {
        self.pending == 0 && self.conflicts == 0
    }
}

/// Every project of `world` and how far its copies are, given the plan made from it (all of it:
/// an action backing off is still pending). Removals do not count: a copy nobody wants does not
/// keep a project's copies from being in place.
pub fn progress(world: &World, actions: &[Action]) -> BTreeMap<ProjectId, Progress> {
    let mut out: BTreeMap<ProjectId, Progress> = world
        .projects()
        .map(|(id, _)| (id.clone(), Progress::default()))
        .collect();
    for action in actions {
        let counter = match action.kind() {
            ActionKind::Create
            | ActionKind::Overwrite
            | ActionKind::Update
            | ActionKind::Recreate => |p: &mut Progress| p.pending += 1,
            ActionKind::Conflict => |p: &mut Progress| p.conflicts += 1,
            _ => continue,
        };
        let project = action
            .origin()
            .and_then(keys::parse_origin)
            .and_then(|(namespace, _)| world.backing_project(namespace));
        if let Some(progress) = project.and_then(|p| out.get_mut(p)) {
            counter(progress);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::*;

    #[test]
    fn a_project_is_in_place_when_nothing_but_removals_is_left() {
        let world = base();
        let planned = actions(&world, WARN);
        assert_eq!(
            progress(&world, &planned)[&p()],
            Progress {
                pending: 2,
                conflicts: 0
            }
        );
        let mut world = converged();
        plain(&mut world, "team-c");
        assert!(progress(&world, &actions(&world, WARN))[&p()].in_place());
        let mut world = base();
        put_copy(&mut world, "team-a");
        plain(&mut world, "team-b");
        let planned = actions(&world, DENY);
        let progress = progress(&world, &planned)[&p()];
        assert_eq!((progress.pending, progress.conflicts), (0, 1));
        assert!(!progress.in_place());
    }
}
