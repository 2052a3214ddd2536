//! placeholder until the testbed lands
