#!/usr/bin/env python3
"""Generate crates/skiff-api/src/protobuf/descriptors.rs, the message table that drives
Skiff's Kubernetes-protobuf-to-JSON decoder.

Inputs (all read-only):

* k8s-pb 0.9.0 (kube-rs; prost types generated from the Kubernetes 1.35 generated.proto
  files): message names, field numbers and protobuf types. `cargo fetch` puts it under
  ~/.cargo/registry/src/*/k8s-pb-0.9.0.
* The Go types the protos were generated from, release-1.35 of kubernetes/api,
  kubernetes/apimachinery and kubernetes/apiextensions-apiserver: JSON names (the `json:`
  struct tag), `omitempty`/`omitzero`, `,inline`, and whether a field is a Go pointer.
  The .proto files cannot tell us the last two: every field in them is proto2 `optional`,
  so every scalar in k8s-pb is `Option<_>` as well.
* Optionally k8s-openapi 0.29 (`--k8s-openapi`), whose serde field names are used as an
  independent cross-check of the JSON names.

Usage:

    git -C kubernetes-api checkout release-1.35   # and the same for the other two
    python3 tools/gen-protobuf-descriptors.py \\
        --go-api ../kubernetes-api --go-apimachinery ../kubernetes-apimachinery \\
        --go-apiextensions ../kubernetes-apiextensions-apiserver \\
        [--k8s-pb DIR] [--k8s-openapi DIR] \\
        --out crates/skiff-api/src/protobuf/descriptors.rs

k8s-pb 0.9.0 is generated from the 1.35 protos (its apiextensions/v1
CustomResourceDefinitionCondition has observedGeneration, tag 6, which 1.35 added), so the Go
side must be release-1.35: the generator stops on any field number one source has and the
other lacks, so a version mismatch cannot slip through. Kubernetes protobuf only ever adds
field numbers, so the table decodes bodies from older clients (kubectl 1.32-1.34) too.

The generator fails loudly on anything it does not understand, rather than guessing.
"""

import argparse
import glob
import os
import re
import sys

# k8s-pb module (path under src/, "::"-joined) -> (short name used in the table, Go dir key,
# Go sub-directory). Only these packages are decoded; every message reachable from their
# kinds must live in one of them.
PACKAGES = {}
API_GROUPS = [
    "admissionregistration/v1",
    "apps/v1",
    "authentication/v1",
    "authorization/v1",
    "autoscaling/v1",
    "autoscaling/v2",
    "batch/v1",
    "certificates/v1",
    "coordination/v1",
    "core/v1",
    "discovery/v1",
    "events/v1",
    "flowcontrol/v1",
    "networking/v1",
    "node/v1",
    "policy/v1",
    "rbac/v1",
    "resource/v1",
    "scheduling/v1",
    "storage/v1",
]
for gv in API_GROUPS:
    g, v = gv.split("/")
    PACKAGES["api::%s::%s" % (g, v)] = ("%s.%s" % (g, v), "api", gv)
PACKAGES["apimachinery::pkg::apis::meta::v1"] = ("meta.v1", "apimachinery", "pkg/apis/meta/v1")
PACKAGES["apimachinery::pkg::api::resource"] = ("resource", "apimachinery", "pkg/api/resource")
PACKAGES["apimachinery::pkg::util::intstr"] = ("intstr", "apimachinery", "pkg/util/intstr")
PACKAGES["apimachinery::pkg::runtime"] = ("runtime", "apimachinery", "pkg/runtime")
PACKAGES["apiextensions_apiserver::pkg::apis::apiextensions::v1"] = (
    "apiextensions.v1",
    "apiextensions",
    "pkg/apis/apiextensions/v1",
)

# Messages whose Go type has its own JSON encoding (a MarshalJSON method), by table name.
# The decoder implements each of these by hand; see `Special` in protobuf/schema.rs.
SPECIAL = {
    "meta.v1.Time": "Time",
    "meta.v1.MicroTime": "MicroTime",
    "meta.v1.Duration": "Duration",
    "meta.v1.FieldsV1": "RawJson",
    "resource.Quantity": "Quantity",
    "resource.QuantityValue": "Quantity",
    "intstr.IntOrString": "IntOrString",
    "runtime.RawExtension": "RawExtension",
    "apiextensions.v1.JSON": "RawJson",
    "apiextensions.v1.JSONSchemaPropsOrBool": "SchemaOrBool",
    "apiextensions.v1.JSONSchemaPropsOrArray": "SchemaOrArray",
    "apiextensions.v1.JSONSchemaPropsOrStringArray": "SchemaOrStringArray",
}

# Kinds that metav1.AddToGroupVersion registers in every group version: a body may carry
# them under any apiVersion. Emitted as META_KINDS.
META_ANY_VERSION = [
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "Status",
    "UpdateOptions",
    "WatchEvent",
]


def die(msg):
    sys.stderr.write("gen-protobuf-descriptors: %s\n" % msg)
    sys.exit(1)


def norm(name):
    """Compare names across Go, proto and Rust spellings: podIPs == pod_i_ps == PodIPs."""
    return name.replace("r#", "").replace("_", "").lower()


# ---------------------------------------------------------------------------------------
# k8s-pb (prost) parsing


class PbField:
    def __init__(self, rust_name, tag, kind, label, key, value, type_path):
        self.rust_name = rust_name
        self.tag = tag
        self.kind = kind  # string, int32, int64, bool, bytes, double, message, map
        self.label = label  # optional, repeated, map
        self.key = key  # map key scalar kind
        self.value = value  # map value kind
        self.type_path = type_path  # resolved module path of the message type, if any


class PbMessage:
    def __init__(self, module, name):
        self.module = module
        self.name = name
        self.fields = []


PROST_RE = re.compile(r"#\[prost\((.*)\)\]\s*$")


def resolve_path(module, path):
    """Resolve a Rust type path (relative, with super::) from `module` to 'a::b::Name'."""
    parts = path.split("::")
    if parts[0] == "crate":
        base = []
        parts = parts[1:]
    else:
        base = module.split("::")
        while parts and parts[0] == "super":
            base = base[:-1]
            parts = parts[1:]
    return "::".join(base + parts)


def inner_type(ty):
    """Strip Option<>, Vec<>, Box<> wrappers and return the message path inside."""
    ty = re.sub(r"\s+", "", ty)
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while ty.startswith(wrapper):
            ty = ty[len(wrapper) : -1].rstrip(",")
    return ty


def map_value_type(ty):
    ty = re.sub(r"\s+", "", ty)
    prefix = "::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,"
    if not ty.startswith(prefix) or not ty.endswith(">"):
        die("unexpected map type %s" % ty)
    return ty[len(prefix) : -1].rstrip(",")


def parse_pb_file(path, module):
    messages = []
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    current = None
    while i < len(lines):
        line = lines[i].strip()
        m = re.match(r"pub struct (\w+) \{(\})?$", line)
        if m:
            current = PbMessage(module, m.group(1))
            messages.append(current)
            if m.group(2):
                current = None
            i += 1
            continue
        if line.startswith("pub mod ") or line.startswith("pub enum "):
            die("%s: nested modules/enums are not supported: %s" % (path, line))
        m = PROST_RE.match(line)
        if m and current is not None:
            attr = m.group(1)
            # the field declaration may span several lines
            i += 1
            decl = lines[i].strip()
            while not (decl.endswith(",") and decl.count("<") == decl.count(">")):
                i += 1
                decl += " " + lines[i].strip()
            dm = re.match(r"pub ((?:r#)?\w+):\s*(.*),$", decl)
            if not dm:
                die("%s: cannot parse field %s" % (path, decl))
            rust_name, ty = dm.group(1), dm.group(2)
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            if attr.startswith("btree_map"):
                kv = re.match(r'btree_map = "(\w+), (\w+)"', attr)
                if kv.group(1) != "string":
                    die("%s.%s: map key %s" % (current.name, rust_name, kv.group(1)))
                value = kv.group(2)
                type_path = None
                if value == "message":
                    type_path = resolve_path(module, map_value_type(ty))
                current.fields.append(PbField(rust_name, tag, "map", "map", "string", value, type_path))
            else:
                words = [w.strip() for w in attr.split(",")]
                kind = words[0].split(" ")[0]
                label = "repeated" if "repeated" in words else "optional"
                if "optional" not in words and "repeated" not in words:
                    # Never happens in k8s-pb: the .proto files are proto2 with `optional`
                    # on every field. The decoder relies on the Go types instead.
                    die("%s.%s: neither optional nor repeated: %s" % (current.name, rust_name, attr))
                if kind not in ("string", "int32", "int64", "bool", "bytes", "double", "message"):
                    die("%s.%s: unsupported prost type %s" % (current.name, rust_name, kind))
                type_path = resolve_path(module, inner_type(ty)) if kind == "message" else None
                current.fields.append(PbField(rust_name, tag, kind, label, None, None, type_path))
        elif line == "}":
            current = None
        i += 1
    return messages


def load_k8s_pb(root):
    by_path = {}
    for module in PACKAGES:
        path = os.path.join(root, "src", *module.split("::"), "mod.rs")
        if not os.path.exists(path):
            die("missing %s" % path)
        for msg in parse_pb_file(path, module):
            by_path["%s::%s" % (module, msg.name)] = msg
    return by_path


def load_pb_kinds(root):
    """k8s-pb's `impl crate::Resource` blocks: (module::Name) -> (apiVersion, kind)."""
    out = {}
    for module in PACKAGES:
        path = os.path.join(root, "src", *module.split("::"), "mod.rs")
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(
            r'impl crate::Resource for (\w+) \{\s*const API_VERSION: &\'static str = "([^"]*)";'
            r'.*?const KIND: &\'static str = "([^"]*)";',
            text,
            re.S,
        ):
            out["%s::%s" % (module, m.group(1))] = (m.group(2), m.group(3))
    return out


# ---------------------------------------------------------------------------------------
# Go parsing


class GoField:
    def __init__(self, go_name, go_type, embedded, json_name, json_opts, pb_tag, pb_name):
        self.go_name = go_name
        self.go_type = go_type
        self.embedded = embedded
        self.json_name = json_name
        self.json_opts = json_opts
        self.pb_tag = pb_tag
        self.pb_name = pb_name


class GoPackage:
    def __init__(self):
        self.structs = {}  # name -> [GoField]
        self.slices = {}  # name -> element type (for `type X []T`)
        self.broken = {}  # struct name -> why its fields could not be parsed
        self.group = None


TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def parse_go_package(directory):
    pkg = GoPackage()
    for path in sorted(glob.glob(os.path.join(directory, "*.go"))):
        base = os.path.basename(path)
        if base.endswith("_test.go") or base.startswith("zz_generated") or base == "generated.pb.go":
            continue
        text = open(path, encoding="utf-8").read()
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # block comments
        m = re.search(r"^// \+groupName=(\S*)\s*$", text, re.M)
        if m:
            pkg.group = m.group(1)
        m = re.search(r'^const GroupName = "([^"]*)"', text, re.M)
        if m and pkg.group is None:
            pkg.group = m.group(1)
        for m in re.finditer(r"^type (\w+) \[\]([\w\.\*]+)\s*$", text, re.M):
            pkg.slices[m.group(1)] = m.group(2)
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^type (\w+) struct\s*\{\s*\}\s*$", lines[i])
            if m:
                pkg.structs[m.group(1)] = []
                i += 1
                continue
            m = re.match(r"^type (\w+) struct \{\s*$", lines[i])
            if not m:
                i += 1
                continue
            name = m.group(1)
            fields = []
            broken = None
            depth = 1
            i += 1
            while i < len(lines):
                raw = lines[i]
                line = raw.split("//")[0] if not raw.strip().startswith("//") else ""
                stripped = line.strip()
                depth += stripped.count("{") - stripped.count("}")
                if depth == 0:
                    break
                if depth == 1 and stripped:
                    if "`" in stripped:
                        head, tag = stripped.split("`", 1)
                        tag = tag.rsplit("`", 1)[0]
                    else:
                        head, tag = stripped, ""
                    words = head.split()
                    if len(words) == 1:
                        go_type = words[0]
                        go_name = go_type.lstrip("*").split(".")[-1]
                        embedded = True
                    elif len(words) == 2:
                        go_name, go_type = words
                        embedded = False
                    else:
                        # e.g. `base, exponent int32` in unexported helper structs; such a
                        # struct is marked unusable and only an error if a message needs it.
                        broken = "%s: %s: cannot parse struct field %r" % (path, name, stripped)
                        i += 1
                        continue
                    tags = dict(TAG_RE.findall(tag))
                    json_tag = tags.get("json")
                    if json_tag is None:
                        json_name, json_opts = (None, [])
                    else:
                        parts = json_tag.split(",")
                        json_name, json_opts = parts[0], parts[1:]
                    pb_tag = pb_name = None
                    pb = tags.get("protobuf")
                    if pb and pb != "-":
                        pparts = pb.split(",")
                        pb_tag = int(pparts[1])
                        for p in pparts:
                            if p.startswith("name="):
                                pb_name = p[len("name=") :]
                    fields.append(GoField(go_name, go_type, embedded, json_name, json_opts, pb_tag, pb_name))
                i += 1
            if name in pkg.structs:
                die("%s: duplicate struct %s" % (directory, name))
            pkg.structs[name] = fields
            if broken:
                pkg.broken[name] = broken
            i += 1
    return pkg


# ---------------------------------------------------------------------------------------
# k8s-openapi cross-check


def load_openapi_names(root):
    """(module, lowercased struct name) -> set of JSON names that k8s-openapi deserializes."""
    out = {}
    for module in PACKAGES:
        directory = os.path.join(root, *module.split("::"))
        for path in glob.glob(os.path.join(directory, "*.rs")):
            text = open(path, encoding="utf-8").read()
            for m in re.finditer(r"^pub struct (\w+)", text, re.M):
                names = set(re.findall(r'^\s*"([^"]+)" => Field::Key_', text, re.M))
                out[(module, m.group(1).lower())] = names
    return out


# ---------------------------------------------------------------------------------------
# joining


def table_name(path):
    module, name = path.rsplit("::", 1)
    return "%s.%s" % (PACKAGES[module][0], name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-pb", default=None)
    ap.add_argument("--k8s-openapi", default=None, help="k8s-openapi src/v1_35 directory")
    ap.add_argument("--go-api", required=True)
    ap.add_argument("--go-apimachinery", required=True)
    ap.add_argument("--go-apiextensions", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    pb_root = args.k8s_pb
    if pb_root is None:
        found = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/k8s-pb-0.9.0"))
        if not found:
            die("k8s-pb-0.9.0 not found; run `cargo fetch` or pass --k8s-pb")
        pb_root = found[0]
    go_roots = {"api": args.go_api, "apimachinery": args.go_apimachinery, "apiextensions": args.go_apiextensions}

    pb = load_k8s_pb(pb_root)
    pb_kinds = load_pb_kinds(pb_root)
    go = {}
    for module, (_, key, sub) in PACKAGES.items():
        go[module] = parse_go_package(os.path.join(go_roots[key], sub))

    # Roots: Go structs that embed TypeMeta and have a protobuf message.
    roots = []  # (apiVersion, kind, path)
    for module, (short, key, sub) in PACKAGES.items():
        pkg = go[module]
        if short in ("resource", "intstr", "runtime"):
            continue  # helper packages, no kinds
        for sname, fields in pkg.structs.items():
            if not any(f.embedded and f.go_type in ("metav1.TypeMeta", "TypeMeta") for f in fields):
                continue
            path = "%s::%s" % (module, sname)
            match = [p for p in pb if p.lower() == path.lower()]
            if not match:
                continue  # Go-only types such as metav1.Table
            path = match[0]
            if pkg.group is None:
                die("%s: no group name" % module)
            version = sub.rsplit("/", 1)[1]
            api_version = version if pkg.group == "" else "%s/%s" % (pkg.group, version)
            if path in pb_kinds and pb_kinds[path] != (api_version, sname):
                die("%s: k8s-pb says %s, Go says %s %s" % (path, pb_kinds[path], api_version, sname))
            roots.append((api_version, sname, path))
    roots.sort()

    # Reachable messages.
    reachable = set()
    todo = [r[2] for r in roots]
    # The well-known types are always in the table, reachable or not (metav1.Duration is
    # used by no GA kind today), so the decoder's special cases are all exercised.
    for module, (short, _, _) in PACKAGES.items():
        for tname in SPECIAL:
            if tname.startswith(short + ".") and tname[len(short) + 1 :].find(".") < 0:
                path = "%s::%s" % (module, tname[len(short) + 1 :])
                match = [p for p in pb if p.lower() == path.lower()]
                if not match:
                    die("special message %s not in k8s-pb" % tname)
                todo.append(match[0])
    while todo:
        path = todo.pop()
        if path in reachable:
            continue
        if path not in pb:
            die("message %s is not in a decoded package" % path)
        reachable.add(path)
        for f in pb[path].fields:
            if f.type_path:
                todo.append(f.type_path)
    ordered = sorted(reachable, key=table_name)
    index = {p: i for i, p in enumerate(ordered)}
    if len(ordered) > 65535:
        die("too many messages for u16 indices")

    openapi = load_openapi_names(args.k8s_openapi) if args.k8s_openapi else None
    checked = unchecked = 0
    counts = {"pointer": 0, "omitempty": 0, "always": 0, "inline": 0, "repeated": 0, "map": 0}

    out_msgs = []
    for path in ordered:
        msg = pb[path]
        module = msg.module
        tname = table_name(path)
        pkg = go[module]
        special = SPECIAL.get(tname)
        go_struct_name = [s for s in pkg.structs if s.lower() == msg.name.lower()]
        slice_name = [s for s in pkg.slices if s.lower() == msg.name.lower()]
        go_fields = None
        if go_struct_name:
            tname = "%s.%s" % (PACKAGES[module][0], go_struct_name[0])
            go_fields = pkg.structs[go_struct_name[0]]
            if go_struct_name[0] in pkg.broken:
                die(pkg.broken[go_struct_name[0]])
            special = SPECIAL.get(tname, special)
        if slice_name and special is None:
            # `type ExtraValue []string`: the message wraps a Go slice and its JSON is the
            # bare array in field 1 (`items`).
            tname = "%s.%s" % (PACKAGES[module][0], slice_name[0])
            if [f.tag for f in msg.fields] != [1] or msg.fields[0].label != "repeated":
                die("%s: slice wrapper without a single repeated field 1" % tname)
            special = "Items"
        if go_fields is None and special is None:
            die("%s: no Go struct and not special" % tname)

        rows = []
        by_tag = {}
        if go_fields is not None:
            for gf in go_fields:
                if gf.pb_tag is not None:
                    by_tag[gf.pb_tag] = gf
        pb_by_tag = {f.tag: f for f in msg.fields}
        if special is None:
            for t in by_tag:
                if t not in pb_by_tag:
                    die("%s: Go field tag %d not in k8s-pb" % (tname, t))
        # Order like the Go struct (the JSON field order Go would write); unknown-to-Go
        # fields last by tag.
        go_order = {gf.pb_tag: i for i, gf in enumerate(go_fields or []) if gf.pb_tag is not None}
        fields = sorted(msg.fields, key=lambda f: (go_order.get(f.tag, 10**6), f.tag))
        for f in fields:
            gf = by_tag.get(f.tag)
            flags = []
            if gf is None:
                if special is None:
                    die("%s: field %s (tag %d) has no Go counterpart" % (tname, f.rust_name, f.tag))
                json_name = f.rust_name
            else:
                if gf.pb_name is not None and norm(gf.pb_name) != norm(f.rust_name):
                    die("%s: tag %d is %s in Go but %s in k8s-pb" % (tname, f.tag, gf.pb_name, f.rust_name))
                if gf.pb_name is None and norm(gf.go_name) != norm(f.rust_name):
                    die("%s: tag %d is %s in Go but %s in k8s-pb" % (tname, f.tag, gf.go_name, f.rust_name))
                if gf.json_name is None:
                    json_name = gf.go_name  # encoding/json default
                else:
                    json_name = gf.json_name
                if json_name == "-":
                    flags.append("SKIP")
                elif json_name == "" or (gf.embedded and gf.json_name is None):
                    # encoding/json inlines an embedded struct whose tag has no name; it
                    # ignores the `,inline` option itself.
                    if not gf.embedded:
                        die("%s.%s: ,inline on a non-embedded field" % (tname, gf.go_name))
                    flags.append("INLINE")
                    counts["inline"] += 1
                is_pointer = gf.go_type.startswith("*")
                if f.label == "optional":
                    if is_pointer:
                        flags.append("PTR")
                        counts["pointer"] += 1
                    elif "omitzero" in gf.json_opts or ("omitempty" in gf.json_opts and f.kind != "message"):
                        # encoding/json ignores omitempty on a struct value; only omitzero
                        # (metadata.creationTimestamp since 1.34) drops a zero struct.
                        flags.append("OMIT")
                        counts["omitempty"] += 1
                    else:
                        counts["always"] += 1
                elif f.label == "repeated":
                    counts["repeated"] += 1
                else:
                    counts["map"] += 1
                if openapi is not None and "SKIP" not in flags and "INLINE" not in flags and special is None:
                    names = openapi.get((module, msg.name.lower()))
                    if names is None:
                        unchecked += 1
                    elif json_name not in names:
                        die("%s: JSON name %s not known to k8s-openapi (%s)" % (tname, json_name, sorted(names)))
                    else:
                        checked += 1
            if f.label == "map":
                if f.value == "message":
                    ty = "MapMsg(%d)" % index[f.type_path]
                else:
                    ty = {"string": "MapStr", "bytes": "MapBytes"}.get(f.value)
                    if ty is None:
                        die("%s: map value %s" % (tname, f.value))
            elif f.kind == "message":
                ty = "Msg(%d)" % index[f.type_path]
            else:
                ty = {"string": "Str", "int32": "I32", "int64": "I64", "bool": "Bool", "bytes": "Bytes", "double": "F64"}[
                    f.kind
                ]
            if f.label == "repeated":
                flags.append("REP")
            rows.append((f.tag, json_name, ty, "|".join(flags) if flags else "0"))
        out_msgs.append((tname, special or "None", rows))

    # kinds
    kinds = sorted((av, k, index[p]) for av, k, p in roots)
    meta = []
    for k in META_ANY_VERSION:
        p = "apimachinery::pkg::apis::meta::v1::%s" % k
        if p in index:
            meta.append((k, index[p]))
    meta.sort()

    w = []
    w.append("// @generated by tools/gen-protobuf-descriptors.py. Do not edit by hand.")
    w.append("//")
    w.append("// Sources: k8s-pb 0.9.0 (prost types of the Kubernetes 1.35 generated.proto files) for")
    w.append("// message names, field numbers and wire types; the Go types of kubernetes/api,")
    w.append("// kubernetes/apimachinery and kubernetes/apiextensions-apiserver (release-1.35) for JSON")
    w.append("// names, omitempty/omitzero, inline and pointer fields. Field order is the Go struct order.")
    w.append("// Message references are indices into MESSAGES.")
    w.append("//")
    w.append(
        "// %d messages, %d kinds; fields: %d pointer, %d omitempty, %d always written, %d inline, %d repeated, %d map."
        % (
            len(out_msgs),
            len(kinds),
            counts["pointer"],
            counts["omitempty"],
            counts["always"],
            counts["inline"],
            counts["repeated"],
            counts["map"],
        )
    )
    w.append("")
    used_flags = sorted({fl for _, _, rows in out_msgs for _, _, _, flags in rows for fl in flags.split("|") if fl != "0"})
    w.append("use super::schema::{f, m, Message, Special, Ty::*, %s};" % ", ".join(used_flags))
    w.append("")
    w.append("#[rustfmt::skip]")
    w.append("pub(super) static MESSAGES: [Message; %d] = [" % len(out_msgs))
    for i, (tname, special, rows) in enumerate(out_msgs):
        w.append("    // %d" % i)
        w.append('    m("%s", Special::%s, &[' % (tname, special))
        for tag, json_name, ty, flags in rows:
            w.append('        f(%d, "%s", %s, %s),' % (tag, json_name, ty, flags))
        w.append("    ]),")
    w.append("];")
    w.append("")
    w.append("/// (apiVersion, kind, message), sorted for binary search.")
    w.append("#[rustfmt::skip]")
    w.append("pub(super) static KINDS: [(&str, &str, u16); %d] = [" % len(kinds))
    for av, k, i in kinds:
        w.append('    ("%s", "%s", %d),' % (av, k, i))
    w.append("];")
    w.append("")
    w.append("/// meta.k8s.io/v1 kinds that every group version registers, sorted by kind.")
    w.append("#[rustfmt::skip]")
    w.append("pub(super) static META_KINDS: [(&str, u16); %d] = [" % len(meta))
    for k, i in meta:
        w.append('    ("%s", %d),' % (k, i))
    w.append("];")
    w.append("")
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(w))
    sys.stderr.write(
        "wrote %s: %d messages, %d kinds, %d JSON names checked against k8s-openapi (%d more in types it lacks)\n"
        % (args.out, len(out_msgs), len(kinds), checked, unchecked)
    )


if __name__ == "__main__":
    main()
