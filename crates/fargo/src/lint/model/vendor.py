#!/usr/bin/env python3
"""Vendors the part of botocore's ECS model fargo needs, and generates the JSON -> SDK code.

Run from the repository root after upgrading botocore or aws-sdk-ecs:
    python3 crates/fargo/src/lint/model/vendor.py

Writes:
  crates/fargo/src/lint/model/ecs-input.json  the input shapes of RegisterTaskDefinition,
      CreateService and UpdateService (documentation stripped) from botocore's
      data/ecs/2014-11-13/service-2.json (Apache-2.0, see NOTICE next to this script);
  crates/fargo/src/aws/ecs_input.rs  functions turning a JSON request body into the
      aws-sdk-ecs request builders, member by member, for the members the SDK version
      in Cargo.lock knows (members it lacks are listed in the generated file).
"""
import glob
import gzip
import json
import os
import re
import subprocess

import botocore

ROOTS = ["RegisterTaskDefinitionRequest", "CreateServiceRequest", "UpdateServiceRequest"]
KEEP = ("type", "members", "required", "member", "key", "value", "enum", "min", "max")

model_path = os.path.join(os.path.dirname(botocore.__file__), "data/ecs/2014-11-13/service-2.json.gz")
model = json.load(gzip.open(model_path))
shapes = model["shapes"]

closure = {}
def walk(name):
    if name in closure:
        return
    s = shapes[name]
    closure[name] = {k: v for k, v in s.items() if k in KEEP}
    if "members" in s:
        closure[name]["members"] = {m: {"shape": d["shape"]} for m, d in s["members"].items()}
        for d in s["members"].values():
            walk(d["shape"])
    for k in ("member", "key", "value"):
        if k in s:
            closure[name][k] = {"shape": s[k]["shape"]}
            walk(s[k]["shape"])
for r in ROOTS:
    walk(r)

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "ecs-input.json"), "w") as f:
    json.dump({"source": "botocore %s data/ecs/2014-11-13/service-2.json (Apache-2.0)" % botocore.__version__,
               "operations": {r[: -len("Request")]: r for r in ROOTS},
               "shapes": dict(sorted(closure.items()))}, f, indent=1, sort_keys=False)
    f.write("\n")

# ---- Rust generation -------------------------------------------------------------------
root = os.path.abspath(os.path.join(here, "../../../../.."))
lock = open(os.path.join(root, "Cargo.lock")).read()
ver = re.search(r'name = "aws-sdk-ecs"\nversion = "([^"]+)"', lock).group(1)
sdk = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/aws-sdk-ecs-%s" % ver))[0]

def snake(name):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()

def sdk_file(struct):
    return os.path.join(sdk, "src/types/_%s.rs" % snake(struct))

_names = {}
def rust_name(shape):
    """The SDK's type name (it camel-cases acronyms: EFSVolumeConfiguration -> EfsVolumeConfiguration)."""
    if shape not in _names:
        src = open(sdk_file(shape)).read()
        _names[shape] = re.search(r"^pub (?:struct|enum) (\w+)", src, re.M).group(1)
    return _names[shape]

def setters(src):
    return {m.lower().replace("_", ""): m for m in re.findall(r"pub fn set_(\w+)\(", src)}

def op_src(req):
    op = snake(req[: -len("Request")])
    return open(os.path.join(sdk, "src/operation/%s/builders.rs" % op)).read()

missing = []
fns = []
done = set()

class NotInSdk(Exception):
    pass

def rust_expr(shape, v, path, depth=0):
    """A Rust expression converting JSON `v` (a &Value) at `path` (a &str expr) to `shape`."""
    s = closure[shape]
    t = s["type"]
    x, i = "x%d" % depth, "i%d" % depth
    if t == "structure":
        if not os.path.exists(sdk_file(shape)):
            raise NotInSdk(shape)
        gen_struct(shape)
        return "s_%s(%s, %s)?" % (snake(shape), v, path)
    if t == "string":
        if "enum" in s:
            if not os.path.exists(sdk_file(shape)):
                raise NotInSdk(shape)
            return "types::%s::from(str_of(%s, %s)?)" % (rust_name(shape), v, path)
        return "str_of(%s, %s)?.to_owned()" % (v, path)
    if t == "integer":
        return "i32_of(%s, %s)?" % (v, path)
    if t == "long":
        return "i64_of(%s, %s)?" % (v, path)
    if t == "boolean":
        return "bool_of(%s, %s)?" % (v, path)
    if t == "double":
        return "f64_of(%s, %s)?" % (v, path)
    if t == "list":
        inner = rust_expr(s["member"]["shape"], x, '&format!("{}[{%s}]", %s)' % (i, path), depth + 1)
        return ("array_of(%s, %s)?.iter().enumerate().map(|(%s, %s)| Ok(%s)).collect::<Result<Vec<_>, ConvError>>()?"
                % (v, path, i, x, inner))
    if t == "map":
        k = "k%d" % depth
        inner = rust_expr(s["value"]["shape"], x, '&format!("{}.{%s}", %s)' % (k, path), depth + 1)
        return ("object_of(%s, %s)?.iter().map(|(%s, %s)| Ok((%s.clone(), %s))).collect::<Result<std::collections::HashMap<_, _>, ConvError>>()?"
                % (v, path, k, x, k, inner))
    raise SystemExit("unsupported shape type %s (%s)" % (t, shape))

def members_body(shape, setter_names, owner):
    lines = []
    for m, d in closure[shape]["members"].items():
        key = m.lower()
        if key not in setter_names:
            missing.append("%s.%s" % (owner, m))
            continue
        try:
            expr = rust_expr(d["shape"], "x", '&format!("{path}.%s")' % m)
        except NotInSdk as e:
            missing.append("%s.%s (%s)" % (owner, m, e))
            continue
        lines.append('            "%s" => b = b.set_%s(Some(%s)),' % (m, setter_names[key], expr))
    return lines

def gen_struct(shape):
    if shape in done:
        return
    done.add(shape)
    src = open(sdk_file(shape)).read()
    fallible = re.search(r"pub fn build\(\s*self,?\s*\)\s*->\s*::std::result::Result<", src) is not None
    lines = members_body(shape, setters(src), shape)
    build = "b.build().map_err(|e| ConvError::build(path, e))" if fallible else "Ok(b.build())"
    fns.append("""fn s_%s(v: &Value, path: &str) -> Result<types::%s, ConvError> {
    let mut b = types::%s::builder();
    for (k, x) in object_of(v, path)? {
        match k.as_str() {
%s
            _ => return Err(ConvError::unknown(path, k)),
        }
    }
    %s
}
""" % (snake(shape), rust_name(shape), rust_name(shape), "\n".join(lines), build))

ops = []
for req in ROOTS:
    op = req[: -len("Request")]
    src = op_src(req)
    lines = members_body(req, setters(src), op)
    ops.append("""/// Applies the JSON body of a `%s` request to the SDK's fluent builder.
pub fn %s(
    mut b: aws_sdk_ecs::operation::%s::builders::%sFluentBuilder,
    v: &Value,
) -> Result<aws_sdk_ecs::operation::%s::builders::%sFluentBuilder, ConvError> {
    let path = "";
    for (k, x) in object_of(v, path)? {
        match k.as_str() {
%s
            _ => return Err(ConvError::unknown(path, k)),
        }
    }
    Ok(b)
}
""" % (op, snake(op), snake(op), op, snake(op), op, "\n".join(lines)))

header = """// Generated by crates/fargo/src/lint/model/vendor.py from botocore %s's ECS model for
// aws-sdk-ecs %s. Do not edit: re-run the script.
//! JSON request bodies (the files in `taskdefs/`) to aws-sdk-ecs requests. The SDK for Rust
//! has no JSON input, so every member is converted explicitly; a key the model does not know
//! is an error naming its path rather than a silently dropped field.
//!
//! Model members this SDK version does not know (a file using them is rejected):
%s
#![allow(clippy::too_many_lines, clippy::needless_question_mark)]

use aws_sdk_ecs::types;
use serde_json::Value;

use super::conv::{%s};

"""
body = "\n".join(ops) + "\n" + "\n".join(sorted(fns))
miss = "\n".join("//! - `%s`" % m for m in missing) or "//! (none)"
with open(os.path.join(root, "crates/fargo/src/aws/ecs_input.rs"), "w") as f:
    helpers = ["ConvError"] + sorted(h for h in ["array_of", "bool_of", "f64_of", "i32_of", "i64_of", "object_of", "str_of"] if h + "(" in body)
    f.write(header % (botocore.__version__, ver, miss, ", ".join(helpers)) + body)
print("shapes:", len(closure), "structs:", len(done), "missing in SDK:", missing)
subprocess.run(["rustfmt", "--edition", "2024", os.path.join(root, "crates/fargo/src/aws/ecs_input.rs")], check=True)

# ---- SDK output types -> JSON (for diff and status) ----------------------------------------
OUT_ROOTS = ["TaskDefinition", "Service"]
out_closure = {}
def walk_out(name):
    if name in out_closure:
        return
    s = shapes[name]
    out_closure[name] = s
    for d in s.get("members", {}).values():
        walk_out(d["shape"])
    for k in ("member", "key", "value"):
        if k in s:
            walk_out(s[k]["shape"])
for r in OUT_ROOTS:
    walk_out(r)

def getters(src):
    # Struct getters only (builders' are `get_*`).
    names = re.findall(r"pub fn (r#)?(\w+)\(&self\) ->", src)
    return {n.lower().replace("_", ""): (raw + n) for raw, n in names if not n.startswith("get_")}

impls = []
out_missing = []
for name in sorted(out_closure):
    s = out_closure[name]
    path = sdk_file(name)
    if s["type"] == "string" and "enum" in s:
        if os.path.exists(path):
            impls.append("impl ToJson for types::%s {\n    fn to_json(&self) -> Value {\n        Value::String(self.as_str().to_owned())\n    }\n}\n" % rust_name(name))
        continue
    if s["type"] != "structure" or s.get("exception"):
        continue
    if not os.path.exists(path):
        out_missing.append(name)
        continue
    src = open(path).read()
    g = getters(src)
    lines = []
    for m, d in s["members"].items():
        key = m.lower()
        target = out_closure[d["shape"]]
        if key not in g or ((target["type"] == "structure" or "enum" in target) and not os.path.exists(sdk_file(d["shape"]))):
            out_missing.append("%s.%s" % (name, m))
            continue
        lines.append('        put(&mut m, "%s", self.%s());' % (m, g[key]))
    impls.append("impl ToJson for types::%s {\n    fn to_json(&self) -> Value {\n        let mut m = Map::new();\n%s\n        Value::Object(m)\n    }\n}\n" % (rust_name(name), "\n".join(lines)))

out_header = """// Generated by crates/fargo/src/lint/model/vendor.py from botocore %s's ECS model for
// aws-sdk-ecs %s. Do not edit: re-run the script.
//! aws-sdk-ecs output types (a registered task definition, a service) back to the JSON of
//! the files in `taskdefs/`, so `fargo diff` compares like with like. Empty lists and
//! absent members are left out, as in the files.
//!
//! Model members this SDK version does not return: %s
#![allow(clippy::too_many_lines)]

use aws_sdk_ecs::types;
use serde_json::{Map, Value};

use super::json::{ToJson, put};

"""
with open(os.path.join(root, "crates/fargo/src/aws/ecs_output.rs"), "w") as f:
    f.write(out_header % (botocore.__version__, ver, ", ".join("`%s`" % m for m in out_missing) or "none") + "\n".join(impls))
subprocess.run(["rustfmt", "--edition", "2024", os.path.join(root, "crates/fargo/src/aws/ecs_output.rs")], check=True)
print("output impls:", len(impls), "missing:", out_missing)
