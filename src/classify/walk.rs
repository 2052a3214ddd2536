//! An exhaustive walk over a parse tree.
//!
//! pg_query's own `nodes()` visits only a subset of node types, which is not
//! enough to prove a statement read-only. Every protobuf type in pg_query
//! derives `serde::Serialize`, and a derived `Serialize` visits every field,
//! so a serializer that keeps nothing but notes what it passes is a complete
//! walk by construction: a node type added in a later PostgreSQL is still
//! visited.

use std::fmt;

use serde::ser::{self, Serialize};

/// What a walk found anywhere under the node it was given.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// A `FOR UPDATE`/`FOR SHARE`/… clause.
    pub(crate) locking: bool,
    /// An `INTO` clause (`SELECT … INTO`).
    pub(crate) into: bool,
    /// A nested INSERT/UPDATE/DELETE/MERGE (a data-modifying CTE).
    pub(crate) modifying: bool,
    /// A relation created TEMPORARY or named in a `pg_temp` schema.
    pub(crate) temp_relation: bool,
    /// The names of relations created TEMPORARY or in `pg_temp`.
    pub(crate) temp_names: Vec<String>,
    /// A table created `ON COMMIT DROP`: it does not outlive its transaction.
    pub(crate) on_commit_drop: bool,
    /// Every function call's name, as its parts.
    pub(crate) functions: Vec<Vec<String>>,
    /// Every relation named (a `RangeVar`'s last name part).
    pub(crate) relations: Vec<String>,
    /// Constant first arguments of `current_setting(…)` calls, lower case.
    pub(crate) setting_args: Vec<String>,
    /// Names of prepared statements EXECUTEd anywhere.
    pub(crate) executes: Vec<String>,
}

/// Walks `node` and everything under it.
pub(crate) fn walk<T: Serialize + ?Sized>(node: &T) -> Findings {
    let mut walker = Walker {
        findings: Findings::default(),
        stack: Vec::with_capacity(32),
    };
    // The walker never fails; an error could only come from a foreign
    // Serialize impl, and then the findings so far are still a lower bound,
    // so the caller is told the worst.
    if node.serialize(&mut walker).is_err() {
        walker.findings.modifying = true;
    }
    walker.findings
}

/// One struct being serialized and the field currently inside it.
struct Frame {
    name: &'static str,
    field: &'static str,
    /// For a `FuncCall`, its index in `Findings::functions`.
    function: usize,
    /// For a `RangeVar`: its schema is `pg_temp`.
    temp_schema: bool,
}

struct Walker {
    findings: Findings,
    stack: Vec<Frame>,
}

/// `OnCommitAction::OncommitDrop` in pg_query's protobuf.
const ONCOMMIT_DROP: i32 = pg_query::protobuf::OnCommitAction::OncommitDrop as i32;

impl Walker {
    fn enter(&mut self, name: &'static str) {
        let mut function = usize::MAX;
        match name {
            "LockingClause" => self.findings.locking = true,
            "IntoClause" => self.findings.into = true,
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.findings.modifying = true
            }
            "FuncCall" => {
                function = self.findings.functions.len();
                self.findings.functions.push(Vec::new());
            }
            _ => {}
        }
        self.stack.push(Frame {
            name,
            field: "",
            function,
            temp_schema: false,
        });
    }

    fn string(&mut self, v: &str) {
        let n = self.stack.len();
        let Some(top) = self.stack.last() else { return };
        match (top.name, top.field) {
            // FuncCall.funcname is a list of Node { node: String { sval } };
            // FuncCall.args of Node { node: AConst { val: Sval(String) } }.
            ("String", "sval") if n >= 3 => {
                let (node, call) = (&self.stack[n - 2], &self.stack[n - 3]);
                if node.name == "Node" && call.name == "FuncCall" && call.field == "funcname" {
                    let index = call.function;
                    if let Some(parts) = self.findings.functions.get_mut(index) {
                        parts.push(v.to_owned());
                    }
                } else if n >= 5
                    && node.name == "AConst"
                    && self.stack[n - 3].name == "Node"
                    && self.stack[n - 4].name == "FuncCall"
                    && self.stack[n - 4].field == "args"
                {
                    let call = self.stack[n - 4].function;
                    let is_setting = self
                        .findings
                        .functions
                        .get(call)
                        .and_then(|parts| parts.last())
                        .is_some_and(|f| f == "current_setting");
                    if is_setting {
                        self.findings.setting_args.push(v.to_ascii_lowercase());
                    }
                }
            }
            ("RangeVar", "relpersistence") if v == "t" => {
                self.findings.temp_relation = true;
                if let Some(name) = self.findings.relations.last() {
                    self.findings.temp_names.push(name.clone());
                }
            }
            ("RangeVar", "schemaname") if is_temp_schema(v) => {
                self.findings.temp_relation = true;
                if let Some(top) = self.stack.last_mut() {
                    top.temp_schema = true;
                }
            }
            ("RangeVar", "relname") => {
                self.findings.relations.push(v.to_owned());
                if top.temp_schema {
                    self.findings.temp_names.push(v.to_owned());
                }
            }
            ("ExecuteStmt", "name") => self.findings.executes.push(v.to_owned()),
            _ => {}
        }
    }

    fn int(&mut self, v: i32) {
        if let Some(top) = self.stack.last() {
            if matches!(
                (top.name, top.field),
                ("CreateStmt", "oncommit") | ("IntoClause", "on_commit")
            ) && v == ONCOMMIT_DROP
            {
                self.findings.on_commit_drop = true;
            }
        }
    }
}

/// `pg_temp` or a session's own `pg_temp_N`.
pub(crate) fn is_temp_schema(name: &str) -> bool {
    name.to_ascii_lowercase().starts_with("pg_temp")
}

#[derive(Debug)]
pub(crate) struct WalkError(String);

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        WalkError(msg.to_string())
    }
}

type Res = Result<(), WalkError>;

impl ser::Serializer for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> Res {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Res {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Res {
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Res {
        self.int(v);
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Res {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Res {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Res {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Res {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Res {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Res {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Res {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Res {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Res {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Res {
        Ok(())
    }
    fn serialize_none(self) -> Res {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Res {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Res {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Res {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Res {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Res {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Res {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, WalkError> {
        self.enter(name);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, WalkError> {
        self.enter(variant);
        Ok(self)
    }
}

/// Sequences and tuples: walk each element.
macro_rules! walk_elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Walker {
            type Ok = ();
            type Error = WalkError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
                value.serialize(&mut **self)
            }
            fn end(self) -> Res {
                Ok(())
            }
        }
    )*};
}

walk_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Res {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
        value.serialize(&mut **self)
    }
    fn end(self) -> Res {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Res {
        if let Some(top) = self.stack.last_mut() {
            top.field = key;
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> Res {
        self.stack.pop();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Res {
        if let Some(top) = self.stack.last_mut() {
            top.field = key;
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> Res {
        self.stack.pop();
        Ok(())
    }
}
