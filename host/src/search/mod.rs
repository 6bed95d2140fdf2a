//! Multi-objective search over the sub-networks of a super-network (docs/SEARCH.md): NSGA-II ([`nsga2`]),
//! hypervolume ([`hv`]), objective predictors ([`predictor`]), the LINAS loop with NSGA-II and random search
//! ([`linas`]: Cummings et al. 2022, as Intel's DyNAS-T implements it), the objectives on real models
//! ([`objectives`]), and the `llamanas search` command ([`run`], [`plot`]).

pub mod hv;
pub mod linas;
pub mod nsga2;
pub mod objectives;
pub mod plot;
pub mod predictor;
pub mod run;
