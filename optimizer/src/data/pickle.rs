//! A restricted pickle reader for the two pickle-based data formats
//! (`np.save` of object arrays, `torch.save`).
//!
//! Why our own: unpickling in Python runs whatever callables the file names,
//! and existing Rust crates (serde-pickle) refuse or cannot represent the
//! numpy/torch objects these files are made of (`_reconstruct` + `BUILD`,
//! `_rebuild_tensor_v2` over persistent storages). This machine:
//! - accepts `GLOBAL`/`STACK_GLOBAL` only for the allow-list in [`ALLOWED`] and
//!   refuses anything else by name;
//! - never calls anything: `REDUCE`/`NEWOBJ` record `Call { func, args }` and
//!   `BUILD` attaches its state; `numpy.rs`/`pth.rs` interpret those records
//!   against the fixed shapes they expect;
//! - checks every length against the bytes actually left before allocating,
//!   and grows memory at most linearly in the input (each opcode adds a bounded
//!   amount: a call refers to its argument tuple rather than copying it, so
//!   calling with one memoized tuple over and over costs nothing per call);
//! - checks the size each tensor constructor declares when it is recorded
//!   (`_rebuild_tensor_v2`, `_frombuffer`, and `_reconstruct`'s `BUILD` state),
//!   with checked arithmetic: the shape must not overflow, must fit the bytes
//!   or storage it views, and all of them together must fit
//!   [`MAX_DECLARED_BYTES`]. Decoding charges its own budget again
//!   (`elem::Budget`, sized from the file, per decoded copy); this one refuses
//!   an absurd shape at the opcode that states it, naming it;
//! - keeps compound values in one arena (`Value::Obj` is an index), so `BUILD`,
//!   `APPEND` and `SETITEM` on a memoized object are seen by every reference,
//!   as in Python, and self-referencing or deeply nested input cannot cause
//!   recursion anywhere (readers only ever descend a fixed number of levels).
//!
//! Opcodes: protocol 2-5 binary opcodes that numpy and torch emit, listed in
//! `Machine::step`. Out-of-band buffers (`NEXT_BUFFER`, `READONLY_BUFFER`) and
//! the text opcodes of protocols 0-1 are refused.

use std::collections::HashMap;
use std::rc::Rc;

/// A callable or class the file may name, already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Global {
    /// `numpy.core.multiarray._reconstruct` (ndarray pickles, then `BUILD`).
    NdarrayReconstruct,
    /// `numpy.ndarray`: the class argument of `_reconstruct`.
    Ndarray,
    /// `numpy.dtype`
    NumpyDtype,
    /// `numpy.core.multiarray.scalar(dtype, raw_bytes)`
    NumpyScalar,
    /// `numpy.core.numeric._frombuffer(buf, dtype, shape, order)` (protocol 5).
    NumpyFromBuffer,
    /// `_codecs.encode(str, 'latin1')`: how protocol 2 spells `bytes`.
    CodecsEncode,
    /// `torch._utils._rebuild_tensor_v2`
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter` (a saved `nn.Parameter`).
    RebuildParameter,
    /// `collections.OrderedDict` (torch's empty `backward_hooks`).
    OrderedDict,
    /// `torch.<Name>Storage`: names the element type of a persistent storage.
    TorchStorage(&'static str),
}

/// Exactly the globals the two formats need, with numpy 1 (`numpy.core`) and
/// numpy 2 (`numpy._core`) spellings.
#[rustfmt::skip]
const ALLOWED: &[(&str, &str, Global)] = &[
    ("numpy.core.multiarray", "_reconstruct", Global::NdarrayReconstruct),
    ("numpy._core.multiarray", "_reconstruct", Global::NdarrayReconstruct),
    ("numpy", "ndarray", Global::Ndarray),
    ("numpy", "dtype", Global::NumpyDtype),
    ("numpy.core.multiarray", "scalar", Global::NumpyScalar),
    ("numpy._core.multiarray", "scalar", Global::NumpyScalar),
    ("numpy.core.numeric", "_frombuffer", Global::NumpyFromBuffer),
    ("numpy._core.numeric", "_frombuffer", Global::NumpyFromBuffer),
    ("_codecs", "encode", Global::CodecsEncode),
    ("torch._utils", "_rebuild_tensor_v2", Global::RebuildTensorV2),
    ("torch._utils", "_rebuild_parameter", Global::RebuildParameter),
    ("collections", "OrderedDict", Global::OrderedDict),
    ("torch", "FloatStorage", Global::TorchStorage("FloatStorage")),
    ("torch", "DoubleStorage", Global::TorchStorage("DoubleStorage")),
    ("torch", "HalfStorage", Global::TorchStorage("HalfStorage")),
    ("torch", "BFloat16Storage", Global::TorchStorage("BFloat16Storage")),
    ("torch", "LongStorage", Global::TorchStorage("LongStorage")),
    ("torch", "IntStorage", Global::TorchStorage("IntStorage")),
    ("torch", "ShortStorage", Global::TorchStorage("ShortStorage")),
    ("torch", "CharStorage", Global::TorchStorage("CharStorage")),
    ("torch", "ByteStorage", Global::TorchStorage("ByteStorage")),
    ("torch", "BoolStorage", Global::TorchStorage("BoolStorage")),
];

impl Global {
    /// `module.name` (numpy's first spelling, `numpy.core`), for messages.
    pub fn python_name(self) -> String {
        ALLOWED
            .iter()
            .find(|(_, _, g)| *g == self)
            .map(|(m, n, _)| format!("{m}.{n}"))
            .unwrap_or_default()
    }
}

fn resolve(module: &str, name: &str) -> Result<Global, String> {
    ALLOWED
        .iter()
        .find(|(m, n, _)| *m == module && *n == name)
        .map(|&(_, _, g)| g)
        .ok_or_else(|| {
            format!(
                "refusing to load: the file references python global '{}.{}'; only numpy/torch \
                 tensor data is accepted",
                module.escape_debug(),
                name.escape_debug()
            )
        })
}

/// The most tensor bytes one pickle may declare, all its tensor constructors
/// together: 64 GiB, more than any data file the verifier can hold in
/// memory. Inline numpy arrays must match their bytes exactly, so only torch
/// views (which may repeat a storage with stride 0) and memo re-use can
/// declare more than the file holds; this keeps a few hundred bytes from
/// declaring petabytes. The decoders' own budget (`elem::Budget`) is the
/// tighter one, charged again for every copy they make.
pub(super) const MAX_DECLARED_BYTES: usize = 64 << 30;

/// A pickled value. Cheap to clone: compound values live in the arena.
#[derive(Debug, Clone)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Global(Global),
    Obj(usize),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Bool(b) => Some(b as i64),
            _ => None,
        }
    }

    /// Text, also from protocol-2 byte strings (`SHORT_BINSTRING`), which is
    /// how Python 2 wrote dict keys.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(super) enum Obj {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `func(*args)` as the file states it, plus the state `BUILD` gave it.
    /// Recorded, never run. `args` is the arena index of the argument tuple
    /// (tuples never change once built), shared rather than copied.
    Call {
        func: Global,
        args: usize,
        state: Option<Value>,
    },
    /// A `BINPERSID` reference (torch storages), holding the id as given.
    Persistent(Value),
}

/// A parsed pickle: the root value and the arena its objects live in.
#[derive(Debug)]
pub(super) struct Pickle {
    heap: Vec<Obj>,
    root: Value,
}

impl Pickle {
    pub fn root(&self) -> &Value {
        &self.root
    }

    pub fn obj(&self, v: &Value) -> Option<&Obj> {
        obj_in(&self.heap, v)
    }

    /// Items of a tuple or list.
    pub fn seq(&self, v: &Value) -> Option<&[Value]> {
        seq_in(&self.heap, v)
    }

    /// `(func, args, state)` of a recorded call.
    pub fn call(&self, v: &Value) -> Option<(Global, &[Value], Option<&Value>)> {
        call_in(&self.heap, v)
    }

    /// A tuple/list of non-negative ints (shapes, strides).
    pub fn dims(&self, v: &Value) -> Option<Vec<usize>> {
        dims_in(&self.heap, v)
    }

    /// What a value is, for "expected X, found Y" messages.
    pub fn describe(&self, v: &Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) => "an int".into(),
            Value::Float(_) => "a float".into(),
            Value::Str(_) => "a str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Global(g) => format!("the python global '{}'", g.python_name()),
            Value::Obj(_) => match self.obj(v) {
                Some(Obj::List(items)) => format!("a list of {}", items.len()),
                Some(Obj::Tuple(items)) => format!("a tuple of {}", items.len()),
                Some(Obj::Dict(items)) => format!("a dict of {}", items.len()),
                Some(Obj::Call { func, .. }) => {
                    format!("an object made by '{}'", func.python_name())
                }
                Some(Obj::Persistent(_)) => "a persistent storage reference".into(),
                None => "a dangling reference".into(),
            },
        }
    }
}

fn obj_in<'h>(heap: &'h [Obj], v: &Value) -> Option<&'h Obj> {
    match v {
        Value::Obj(id) => heap.get(*id),
        _ => None,
    }
}

fn seq_in<'h>(heap: &'h [Obj], v: &Value) -> Option<&'h [Value]> {
    match obj_in(heap, v)? {
        Obj::Tuple(items) | Obj::List(items) => Some(items),
        _ => None,
    }
}

fn call_in<'h>(heap: &'h [Obj], v: &Value) -> Option<(Global, &'h [Value], Option<&'h Value>)> {
    match obj_in(heap, v)? {
        Obj::Call { func, args, state } => match heap.get(*args)? {
            Obj::Tuple(items) => Some((*func, items, state.as_ref())),
            _ => None,
        },
        _ => None,
    }
}

fn dims_in(heap: &[Obj], v: &Value) -> Option<Vec<usize>> {
    seq_in(heap, v)?
        .iter()
        .map(|d| d.as_int().and_then(|i| usize::try_from(i).ok()))
        .collect()
}

/// Parses a pickle stream up to its `STOP`. Errors say where and what.
pub(super) fn parse(data: &[u8]) -> Result<Pickle, String> {
    parse_with_limit(data, MAX_DECLARED_BYTES)
}

/// [`parse`] with the budget for declared tensor bytes given.
pub(super) fn parse_with_limit(data: &[u8], declared_limit: usize) -> Result<Pickle, String> {
    let mut m = Machine {
        input: data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        heap: Vec::new(),
        declared: 0,
        declared_limit,
    };
    loop {
        let at = m.pos;
        match m.step() {
            Ok(Some(root)) => return Ok(Pickle { heap: m.heap, root }),
            Ok(None) => {}
            Err(e) => return Err(format!("pickle data at byte {at}: {e}")),
        }
    }
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each `MARK` (CPython's "metastack").
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    heap: Vec<Obj>,
    /// Tensor bytes the constructors recorded so far declare.
    declared: usize,
    /// What `declared` may reach ([`MAX_DECLARED_BYTES`]).
    declared_limit: usize,
}

const TRUNCATED: &str = "the pickle ends early (is the file truncated?)";

impl Machine<'_> {
    /// Runs one opcode; the root value once `STOP` is reached.
    fn step(&mut self) -> Result<Option<Value>, String> {
        let op = self.u8()?;
        match op {
            // PROTO
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(format!("unsupported pickle protocol {proto}"));
                }
            }
            // FRAME: a length prefix for buffering; the content follows inline.
            0x95 => {
                self.take(8)?;
            }
            b'.' => return self.pop().map(Some),       // STOP
            b'(' => self.marks.push(self.stack.len()), // MARK

            b']' => self.push_obj(Obj::List(Vec::new())), // EMPTY_LIST
            b'}' => self.push_obj(Obj::Dict(Vec::new())), // EMPTY_DICT
            b')' => self.push_obj(Obj::Tuple(Vec::new())), // EMPTY_TUPLE
            b'l' => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::List(items)); // LIST
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Tuple(items)); // TUPLE
            }
            0x85..=0x87 => {
                // TUPLE1, TUPLE2, TUPLE3
                let n = usize::from(op - 0x84);
                let start = self.stack.len().checked_sub(n).ok_or("stack underflow")?;
                if start < self.floor() {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(start);
                self.push_obj(Obj::Tuple(items));
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.push_obj(Obj::Dict(pairs)); // DICT
            }
            b'a' => {
                let v = self.pop()?;
                self.list_top()?.push(v); // APPEND
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.list_top()?.extend(items); // APPENDS
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.dict_top()?.push((k, v)); // SETITEM
            }
            b'u' => {
                let items = self.pop_mark()?;
                let new = pairs(items)?;
                self.dict_top()?.extend(new); // SETITEMS
            }

            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)), // NEWTRUE
            0x89 => self.stack.push(Value::Bool(false)), // NEWFALSE
            b'K' => {
                let v = self.u8()?;
                self.stack.push(Value::Int(v.into())); // BININT1
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.stack.push(Value::Int(v.into())); // BININT2
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.stack.push(Value::Int(v.into())); // BININT
            }
            0x8a => {
                let n = usize::from(self.u8()?); // LONG1
                let v = long(self.take(n)?)?;
                self.stack.push(Value::Int(v));
            }
            0x8b => {
                let n = self.len32()?; // LONG4
                let v = long(self.take(n)?)?;
                self.stack.push(Value::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.stack.push(Value::Float(v)); // BINFLOAT
            }

            // Byte strings: SHORT_BINSTRING, BINSTRING (Python 2 `str`),
            // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8.
            b'U' | b'C' => {
                let n = usize::from(self.u8()?);
                self.push_bytes(n)?;
            }
            b'T' | b'B' => {
                let n = self.len32()?;
                self.push_bytes(n)?;
            }
            0x8e | 0x96 => {
                let n = self.len64()?;
                self.push_bytes(n)?;
            }
            // Text: SHORT_BINUNICODE, BINUNICODE, BINUNICODE8.
            0x8c => {
                let n = usize::from(self.u8()?);
                self.push_str(n)?;
            }
            b'X' => {
                let n = self.len32()?;
                self.push_str(n)?;
            }
            0x8d => {
                let n = self.len64()?;
                self.push_str(n)?;
            }

            b'c' => {
                // GLOBAL: "module\nname\n"
                let module = self.line()?;
                let name = self.line()?;
                let g = resolve(&module, &name)?;
                self.stack.push(Value::Global(g));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                let g = resolve(module, name)?;
                self.stack.push(Value::Global(g));
            }
            b'R' | 0x81 => {
                // REDUCE: func(*args); NEWOBJ: cls.__new__(cls, *args).
                let args = self.pop()?;
                let func = self.pop()?;
                let Value::Global(func) = func else {
                    return Err("only allowed globals may be called".into());
                };
                // The tuple is referred to, not copied: a memoized tuple
                // passed to call after call must not multiply memory.
                let args = match (&args, obj_in(&self.heap, &args)) {
                    (Value::Obj(id), Some(Obj::Tuple(items))) => (*id, items.is_empty()),
                    _ => return Err("call arguments must be a tuple".into()),
                };
                // An OrderedDict is filled by SETITEMS after its (empty) call.
                let obj = if func == Global::OrderedDict && args.1 {
                    Obj::Dict(Vec::new())
                } else {
                    // A tensor constructor's size is checked and charged now,
                    // before anything could be built from it.
                    if let Some(Obj::Tuple(items)) = self.heap.get(args.0) {
                        let declared = declared_by_call(&self.heap, func, items)?;
                        self.charge(declared)?;
                    }
                    Obj::Call {
                        func,
                        args: args.0,
                        state: None,
                    }
                };
                self.push_obj(obj);
            }
            b'b' => {
                // BUILD: set the state of the object below it.
                let state = self.pop()?;
                let top = self.top()?;
                let func = match obj_in(&self.heap, &top) {
                    Some(Obj::Call {
                        func, state: None, ..
                    }) => *func,
                    _ => return Err("BUILD applies only once, to an object made by a call".into()),
                };
                // An ndarray's shape and data arrive with BUILD: checked and
                // charged before they are attached.
                if func == Global::NdarrayReconstruct {
                    let declared = declared_by_array_state(&self.heap, &state)?;
                    self.charge(declared)?;
                }
                if let Some(Obj::Call { state: slot, .. }) = self.heap_mut(&top) {
                    *slot = Some(state);
                }
            }
            b'Q' => {
                // BINPERSID
                let pid = self.pop()?;
                self.push_obj(Obj::Persistent(pid));
            }

            b'q' => {
                let i = self.u8()?;
                self.memo_put(i.into())?; // BINPUT
            }
            b'r' => {
                let i = u32::from_le_bytes(self.array()?);
                self.memo_put(i)?; // LONG_BINPUT
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo too large")?;
                self.memo_put(i)?; // MEMOIZE
            }
            b'h' => {
                let i = self.u8()?;
                self.memo_get(i.into())?; // BINGET
            }
            b'j' => {
                let i = u32::from_le_bytes(self.array()?);
                self.memo_get(i)?; // LONG_BINGET
            }

            0x97 | 0x98 => {
                return Err("out-of-band pickle buffers are not supported".into());
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} (only the binary opcodes numpy \
                     and torch write are accepted)"
                ))
            }
        }
        Ok(None)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let bytes = self.input.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    /// A 4-byte length; negative (BINSTRING is signed) or past the end is an
    /// error before anything is allocated.
    fn len32(&mut self) -> Result<usize, String> {
        let n = i32::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| format!("negative length {n}"))
    }

    fn len64(&mut self) -> Result<usize, String> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| TRUNCATED.to_string())
    }

    /// A `\n`-terminated ASCII line (GLOBAL's operands).
    fn line(&mut self) -> Result<String, String> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let n = rest.iter().position(|&b| b == b'\n').ok_or(TRUNCATED)?;
        let line = self.take(n + 1)?;
        let text = std::str::from_utf8(&line[..n]).map_err(|_| "GLOBAL name is not text")?;
        Ok(text.to_string())
    }

    fn push_bytes(&mut self, n: usize) -> Result<(), String> {
        let b: Rc<[u8]> = self.take(n)?.into();
        self.stack.push(Value::Bytes(b));
        Ok(())
    }

    fn push_str(&mut self, n: usize) -> Result<(), String> {
        let s: Rc<str> = std::str::from_utf8(self.take(n)?)
            .map_err(|_| "a string is not valid UTF-8")?
            .into();
        self.stack.push(Value::Str(s));
        Ok(())
    }

    /// Adds a tensor constructor's declared bytes to the running total;
    /// past the budget it is an error naming the constructor and shape.
    fn charge(&mut self, declared: Option<Declared>) -> Result<(), String> {
        let Some(Declared { what, shape, bytes }) = declared else {
            return Ok(());
        };
        match self.declared.checked_add(bytes) {
            Some(total) if total <= self.declared_limit => {
                self.declared = total;
                Ok(())
            }
            _ => Err(format!(
                "{what}: a tensor of shape {shape:?} needs {bytes} bytes, which takes the tensors \
                 this file declares past the budget of {} bytes",
                self.declared_limit
            )),
        }
    }

    fn push_obj(&mut self, obj: Obj) {
        self.heap.push(obj);
        self.stack.push(Value::Obj(self.heap.len() - 1));
    }

    fn heap_mut(&mut self, v: &Value) -> Option<&mut Obj> {
        match v {
            Value::Obj(id) => self.heap.get_mut(*id),
            _ => None,
        }
    }

    /// Where the items after the innermost MARK begin. Like CPython, opcodes
    /// never reach below it: that is a malformed pickle.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&self) -> Result<Value, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self.marks.pop().ok_or("no MARK to collect items from")?;
        Ok(self.stack.split_off(at.min(self.stack.len())))
    }

    fn list_top(&mut self) -> Result<&mut Vec<Value>, String> {
        let top = self.top()?;
        match self.heap_mut(&top) {
            Some(Obj::List(items)) => Ok(items),
            _ => Err("APPEND needs a list".into()),
        }
    }

    fn dict_top(&mut self) -> Result<&mut Vec<(Value, Value)>, String> {
        let top = self.top()?;
        match self.heap_mut(&top) {
            Some(Obj::Dict(items)) => Ok(items),
            _ => Err("SETITEM needs a dict".into()),
        }
    }

    fn memo_put(&mut self, i: u32) -> Result<(), String> {
        let top = self.top()?;
        self.memo.insert(i, top);
        Ok(())
    }

    fn memo_get(&mut self, i: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo entry {i} was never stored"))?;
        self.stack.push(v);
        Ok(())
    }
}

/// What one tensor constructor asks for: its python name, shape and bytes.
struct Declared {
    what: String,
    shape: Vec<usize>,
    bytes: usize,
}

/// Element count and bytes of `shape`, refusing an overflow by name.
fn checked_size(what: &str, shape: &[usize], elem_size: usize) -> Result<(usize, usize), String> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| Some((n, n.checked_mul(elem_size)?)))
        .ok_or_else(|| {
            format!("{what}: shape {shape:?} needs more bytes than can be addressed (the size overflows)")
        })
}

/// The element size of a recorded `numpy.dtype(code, ...)`: `Some(None)` for
/// an object dtype, `None` when it is not a dtype we read (the interpreter
/// reports that).
fn numpy_elem_size(heap: &[Obj], dt: &Value) -> Option<(String, Option<usize>)> {
    let (Global::NumpyDtype, args, _) = call_in(heap, dt)? else {
        return None;
    };
    let code = args.first()?.as_str()?;
    match super::numpy::type_code(code).ok()? {
        super::numpy::NpType::Elem(e) => Some((code.to_string(), Some(e.size()))),
        super::numpy::NpType::Object => Some((code.to_string(), None)),
    }
}

/// Bytes per element of a `torch.<Name>Storage` (unknown kinds: one, the
/// interpreter refuses them).
fn torch_storage_size(kind: &str) -> usize {
    match kind {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        _ => 1,
    }
}

/// The size a tensor-constructing call declares, checked: `None` for other
/// calls and for arguments too malformed to size (the interpreters refuse
/// those with their own messages).
fn declared_by_call(
    heap: &[Obj],
    func: Global,
    args: &[Value],
) -> Result<Option<Declared>, String> {
    match func {
        Global::RebuildTensorV2 => torch_view(heap, args),
        Global::NumpyFromBuffer => {
            let what = func.python_name();
            let [buf, dt, shape, ..] = args else {
                return Ok(None);
            };
            let Some(shape) = dims_in(heap, shape) else {
                return Ok(None);
            };
            let Some((code, Some(size))) = numpy_elem_size(heap, dt) else {
                checked_size(&what, &shape, 1)?;
                return Ok(None);
            };
            let (_, bytes) = checked_size(&what, &shape, size)?;
            if let Value::Bytes(b) = buf {
                if b.len() != bytes {
                    return Err(format!(
                        "{what}: an array of shape {shape:?} of '{code}' needs {bytes} bytes, the \
                         buffer has {} bytes",
                        b.len()
                    ));
                }
            }
            Ok(Some(Declared { what, shape, bytes }))
        }
        _ => Ok(None),
    }
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`: the
/// size must not overflow, and when the storage reference states its element
/// count, the view must stay inside it.
fn torch_view(heap: &[Obj], args: &[Value]) -> Result<Option<Declared>, String> {
    let what = Global::RebuildTensorV2.python_name();
    let [storage, offset, size, stride, ..] = args else {
        return Ok(None);
    };
    let Some(shape) = dims_in(heap, size) else {
        return Ok(None);
    };
    // ('storage', torch.<Name>Storage, key, location, numel)
    let store = match obj_in(heap, storage) {
        Some(Obj::Persistent(pid)) => match seq_in(heap, pid) {
            Some([_, Value::Global(Global::TorchStorage(kind)), key, _, numel]) => Some((
                torch_storage_size(kind),
                key.as_str().unwrap_or("?").to_string(),
                numel.as_int().and_then(|n| usize::try_from(n).ok()),
            )),
            _ => None,
        },
        _ => None,
    };
    let elem_size = store.as_ref().map_or(1, |s| s.0);
    let (numel, bytes) = checked_size(&what, &shape, elem_size)?;
    let offset = offset.as_int().and_then(|o| usize::try_from(o).ok());
    if let (Some((_, key, Some(available))), Some(strides), Some(offset)) =
        (&store, dims_in(heap, stride), offset)
    {
        if strides.len() == shape.len() && numel > 0 {
            // The furthest element the view reads; size-1 dims never step.
            let last = shape
                .iter()
                .zip(&strides)
                .try_fold(offset, |acc, (&d, &s)| {
                    if d > 1 {
                        (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
                    } else {
                        Some(acc)
                    }
                });
            if last.is_none_or(|l| l >= *available) {
                return Err(format!(
                    "{what}: a view of shape {shape:?} (strides {strides:?}, offset {offset}) \
                     reaches past the {available} elements of storage '{key}'"
                ));
            }
        }
    }
    Ok(Some(Declared { what, shape, bytes }))
}

/// `_reconstruct`'s `BUILD` state `(version, shape, dtype, is_fortran, data)`
/// (or without the version): a numeric array's data must be exactly shape ×
/// element size bytes; an object array's items are already parsed values.
fn declared_by_array_state(heap: &[Obj], state: &Value) -> Result<Option<Declared>, String> {
    let what = Global::NdarrayReconstruct.python_name();
    let (shape, dt, data) = match seq_in(heap, state) {
        Some([_, shape, dt, _, data]) | Some([shape, dt, _, data]) => (shape, dt, data),
        _ => return Ok(None),
    };
    let Some(shape) = dims_in(heap, shape) else {
        return Ok(None);
    };
    let Some((code, Some(size))) = numpy_elem_size(heap, dt) else {
        checked_size(&what, &shape, 1)?;
        return Ok(None);
    };
    let (_, bytes) = checked_size(&what, &shape, size)?;
    let mismatch = |have: String| {
        format!("{what}: an array of shape {shape:?} of '{code}' needs {bytes} bytes, the data has {have}")
    };
    match data {
        Value::Bytes(b) if b.len() != bytes => return Err(mismatch(format!("{} bytes", b.len()))),
        // Latin-1 text (protocol 2): one character a byte, one or two UTF-8
        // bytes a character, so more bytes than its UTF-8 length can never
        // match (the exact count is checked when decoding; counting
        // characters here would cost a pass over the text per BUILD).
        Value::Str(t) if bytes > t.len() => {
            return Err(mismatch(format!("at most {} bytes", t.len())))
        }
        _ => {
            if let Some((Global::CodecsEncode, [Value::Str(t), ..], _)) = call_in(heap, data) {
                if bytes > t.len() {
                    return Err(mismatch(format!("at most {} bytes", t.len())));
                }
            }
        }
    }
    Ok(Some(Declared { what, shape, bytes }))
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("dict items come in key/value pairs".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// A little-endian two's complement integer (LONG1/LONG4) that fits in i64.
fn long(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() > 8 {
        return Err("integer wider than 64 bits".into());
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut word = [if negative { 0xff } else { 0 }; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    Ok(i64::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps([1, -2, 300, 2**40, 1.5, 'é', b'xy', None, True, {'k': (1,)}], protocol=2)`,
    /// written out by hand.
    fn protocol2_sample() -> Vec<u8> {
        let mut p = vec![0x80, 2, b']', b'q', 0, b'('];
        p.extend([b'K', 1]);
        p.extend([b'J', 0xfe, 0xff, 0xff, 0xff]);
        p.extend([b'M', 0x2c, 0x01]);
        p.extend([0x8a, 6, 0, 0, 0, 0, 0, 1]);
        p.push(b'G');
        p.extend(1.5f64.to_be_bytes());
        p.extend([b'X', 2, 0, 0, 0, 0xc3, 0xa9]);
        p.extend([b'U', 2, b'x', b'y']);
        p.extend([
            b'N', 0x88, b'}', b'q', 1, b'U', 1, b'k', b'K', 1, 0x85, b's',
        ]);
        p.extend([b'e', b'.']);
        p
    }

    #[test]
    fn reads_the_value_opcodes() {
        let p = parse(&protocol2_sample()).unwrap();
        let items = p.seq(p.root()).unwrap();
        assert_eq!(items.len(), 10);
        let ints: Vec<_> = items[..4].iter().map(|v| v.as_int().unwrap()).collect();
        assert_eq!(ints, vec![1, -2, 300, 1 << 40]);
        assert!(matches!(items[4], Value::Float(x) if x == 1.5));
        assert_eq!(items[5].as_str(), Some("é"));
        assert!(matches!(&items[6], Value::Bytes(b) if &b[..] == b"xy"));
        assert!(matches!(items[7], Value::None));
        assert!(matches!(items[8], Value::Bool(true)));
        let Some(Obj::Dict(d)) = p.obj(&items[9]) else {
            panic!("expected a dict")
        };
        assert_eq!(d[0].0.as_str(), Some("k"));
        assert_eq!(p.dims(&d[0].1), Some(vec![1]));
    }

    #[test]
    fn mutations_are_seen_through_the_memo() {
        // l = []; [l, l] with l filled after memoizing: EMPTY_LIST MEMOIZE
        // BINGET 0 TUPLE2, then APPEND to the first reference.
        let p = [0x80, 4, b']', 0x94, b'h', 0, 0x86, b'K', 7, b'a', b'.'];
        // APPEND needs a list on top; here the top is the tuple, so refused.
        assert!(parse(&p).unwrap_err().contains("APPEND needs a list"));
        let p = [0x80, 4, b']', 0x94, b'K', 7, b'a', b'h', 0, 0x86, b'.'];
        let p = parse(&p).unwrap();
        let pair = p.seq(p.root()).unwrap();
        assert_eq!(p.seq(&pair[1]).unwrap().len(), 1);
        assert_eq!(p.seq(&pair[0]).unwrap()[0].as_int(), Some(7));
    }

    #[test]
    fn refuses_globals_outside_the_allow_list() {
        let e = parse(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap_err();
        assert!(
            e.contains("refusing to load")
                && e.contains("'os.system'")
                && e.contains("only numpy/torch tensor data"),
            "{e}"
        );
        let stacked = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert!(parse(stacked).unwrap_err().contains("'builtins.eval'"));
        // Allowed module, other name.
        assert!(parse(b"\x80\x02ctorch._utils\n_load_from_bytes\n.")
            .unwrap_err()
            .contains("'torch._utils._load_from_bytes'"));
        // Calling something that is not a resolved global.
        assert!(parse(b"\x80\x02K\x01)R.")
            .unwrap_err()
            .contains("only allowed globals"));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = protocol2_sample();
        for n in 0..full.len() {
            assert!(parse(&full[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn absurd_lengths_are_errors_not_allocations() {
        let mut p = vec![0x80, 4, 0x8e];
        p.extend((1u64 << 62).to_le_bytes());
        assert!(parse(&p).unwrap_err().contains("truncated"));
        let mut p = vec![0x80, 4, 0x8d];
        p.extend(u64::MAX.to_le_bytes());
        assert!(parse(&p).is_err());
        assert!(parse(b"\x80\x02T\xff\xff\xff\xff.")
            .unwrap_err()
            .contains("negative length"));
        let mut p = vec![0x80, 2, 0x8b];
        p.extend(0x7fff_ffffu32.to_le_bytes());
        assert!(parse(&p).is_err());
    }

    /// `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
    /// OrderedDict())` over a FloatStorage of `numel` elements, key '0'.
    fn torch_tensor(numel: i32, size: &[i32], stride: &[i32]) -> Vec<u8> {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        p.extend(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
        p.extend(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ");
        p.extend(numel.to_le_bytes());
        p.extend(b"tQK\x00");
        for dims in [size, stride] {
            p.push(b'(');
            for d in dims {
                p.push(b'J');
                p.extend(d.to_le_bytes());
            }
            p.push(b't');
        }
        p.extend(b"\x89ccollections\nOrderedDict\n)RtR.");
        p
    }

    #[test]
    fn torch_views_are_sized_when_recorded() {
        // A plain [2, 3] view of 6 elements is recorded as before.
        let p = parse(&torch_tensor(6, &[2, 3], &[3, 1])).unwrap();
        let (func, args, _) = p.call(p.root()).unwrap();
        assert_eq!(func, Global::RebuildTensorV2);
        assert_eq!(p.dims(&args[2]), Some(vec![2, 3]));
        // 2^50 floats repeated from one element with stride 0: within its
        // storage, but 4 PiB, so over the budget, refused at the REDUCE.
        let e = parse(&torch_tensor(1, &[1 << 20, 1 << 20, 1 << 10], &[0, 0, 0])).unwrap_err();
        assert!(
            e.contains("_rebuild_tensor_v2")
                && e.contains("[1048576, 1048576, 1024]")
                && e.contains("4503599627370496 bytes")
                && e.contains("budget"),
            "{e}"
        );
        // The same budget, smaller: the second 24-byte tensor does not fit.
        let two = {
            let one = torch_tensor(6, &[2, 3], &[3, 1]);
            // [t, t] with both REDUCEd: PROTO, MARK, two bodies, LIST.
            let body = &one[2..one.len() - 1];
            let mut p = vec![0x80, 2, b'('];
            p.extend(body);
            p.extend(body);
            p.extend(b"l.");
            p
        };
        assert!(parse(&two).is_ok());
        let e = parse_with_limit(&two, 40).unwrap_err();
        assert!(
            e.contains("needs 24 bytes") && e.contains("budget of 40 bytes"),
            "{e}"
        );
        // A size whose element count overflows.
        let e = parse(&torch_tensor(1, &[i32::MAX; 3], &[0, 0, 0])).unwrap_err();
        assert!(
            e.contains("_rebuild_tensor_v2") && e.contains("overflows"),
            "{e}"
        );
        // A view larger than the storage it views.
        let e = parse(&torch_tensor(4, &[10], &[1])).unwrap_err();
        assert!(
            e.contains("shape [10]") && e.contains("past the 4 elements of storage '0'"),
            "{e}"
        );
    }

    /// `_reconstruct(ndarray, (0,), b'b')` + `BUILD` with a float32 `shape`
    /// and `data` as bytes (protocol 2 opcodes, numpy 1 names).
    fn ndarray(shape: &[i32], data: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b\x87R(K\x01(".to_vec();
        for d in shape {
            p.push(b'J');
            p.extend(d.to_le_bytes());
        }
        p.extend(b"tcnumpy\ndtype\nU\x02f4\x89\x88\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89B");
        p.extend((data.len() as u32).to_le_bytes());
        p.extend(data);
        p.extend(b"tb.");
        p
    }

    #[test]
    fn ndarray_states_are_sized_when_built() {
        assert!(parse(&ndarray(&[2, 2], &[0; 16])).is_ok());
        let e = parse(&ndarray(&[1 << 30, 1 << 30], &[0; 4])).unwrap_err();
        assert!(
            e.contains("_reconstruct")
                && e.contains("[1073741824, 1073741824]")
                && e.contains("needs 4611686018427387904 bytes, the data has 4 bytes"),
            "{e}"
        );
        let e = parse(&ndarray(&[i32::MAX, i32::MAX, i32::MAX], &[0; 4])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn calls_share_their_memoized_arguments() {
        // One 1000-item tuple passed to 1000 calls: each call refers to it,
        // so memory stays linear in the input (a copy per call would be
        // quadratic).
        let mut p = b"\x80\x02](c_codecs\nencode\nq\x00(".to_vec();
        for _ in 0..1000 {
            p.extend([b'K', 1]);
        }
        p.extend(b"tq\x01R");
        for _ in 0..1000 {
            p.extend(b"h\x00h\x01R");
        }
        p.extend(b"e.");
        let p = parse(&p).unwrap();
        let calls = p.seq(p.root()).unwrap();
        assert_eq!(calls.len(), 1001);
        let first = p.call(&calls[0]).unwrap().1;
        assert_eq!(first.len(), 1000);
        for c in calls {
            assert!(std::ptr::eq(p.call(c).unwrap().1, first));
        }
    }

    #[test]
    fn malformed_streams_are_errors() {
        for bad in [
            &b"."[..],                                        // STOP on an empty stack
            b"\x80\x06N.",                                    // protocol 6
            b"(a.",                                           // APPEND below a MARK
            b"]Ns.",                                          // SETITEM on a list
            b"(K\x01d.",                                      // odd dict items
            b"h\x05.",                                        // memo miss
            b"N\x94\x97.",                                    // out-of-band buffer
            b"I1\n.",                                         // text opcode (protocol 0)
            b"]N\x94b.",                                      // BUILD on a list
            b"\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01.", // 72-bit int
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
