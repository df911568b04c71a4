"""The Roblox stand-in offers no more than Roblox's own API description says a plugin may use.

tools/luau_harness/roblox_api.json is derived from Roblox's Full-API-Dump.json (Studio 0.735) by
tools/luau_harness/roblox_api.py. Statically, every class the stand-in implements and every
property, method and event on it must exist there for a plugin (security None or PluginSecurity,
scriptable), not be Deprecated, and agree on read-only, creatable and service; at run time the
stand-in raises Studio's "X is not a valid member of Y" for anything the dump lacks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.luau_harness import LuauError, LuauHarness
from tools.luau_harness.convert import from_lua
from tools.luau_harness.roblox_api import (
    DATA_FILE,
    RobloxApi,
    derive,
    derive_file,
    find_dump,
    load,
    render,
)

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SRC = ROOT / "plugin" / "src"


@pytest.fixture(scope="module")
def stand_in() -> dict[str, Any]:
    with LuauHarness(PLUGIN_SRC) as h:
        classes: dict[str, Any] = from_lua(h.call(h._H.get("describeClasses"))[0])
    return classes


def problems_with(name: str, cls: dict[str, Any], api: RobloxApi) -> Iterator[str]:
    if not api.has_class(name):
        yield f"{name}: no such class in the API dump"
        return
    tags = api.class_tags(name)
    if "Deprecated" in tags:
        yield f"{name}: the class is deprecated"
    dump_super = api.superclass(name)
    if (cls["super"] or "Object") != (dump_super or "Object"):
        yield f"{name}: superclass {cls['super']}, the dump says {dump_super}"
    creatable = not ({"NotCreatable", "Service"} & tags)
    if cls["creatable"] != creatable:
        yield f"{name}: creatable={cls['creatable']}, the dump says {creatable}"
    if cls["service"] and "Service" not in tags:
        yield f"{name}: offered by GetService but not a service in the dump"
    kinds = {
        **{k: "Property" for k in cls["props"]},
        **{k: "Property" for k in cls["computed"]},
        **{k: "Function" for k in cls["methods"]},
        **{k: "Event" for k in cls["events"]},
    }
    for member, kind in sorted(kinds.items()):
        found = api.member(name, member)
        where = f"{name}.{member}"
        if found is None:
            yield f"{where}: not in the API dump for a plugin (missing, or security/NotScriptable)"
            continue
        if found.kind != kind:
            yield f"{where}: the stand-in has a {kind}, the dump a {found.kind}"
        if found.deprecated:
            yield f"{where}: deprecated" + (f" (use {found.preferred})" if found.preferred else "")
        if kind == "Property":
            stand_in_read_only = member in cls["computed"] or cls["props"].get(member, False)
            if stand_in_read_only != found.read_only:
                yield f"{where}: read_only={stand_in_read_only}, the dump says {found.read_only}"


def test_every_stand_in_class_and_member_is_in_the_api_dump(stand_in: dict[str, Any]) -> None:
    api = load()
    problems = [p for name in sorted(stand_in) for p in problems_with(name, stand_in[name], api)]
    assert not problems, "the stand-in offers what Studio does not:\n" + "\n".join(problems)


# -- at run time --------------------------------------------------------------------------------


@pytest.fixture
def h(tmp_path: Path) -> Iterator[LuauHarness]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "M.luau").write_text("return 1\n", encoding="utf-8")
    with LuauHarness(tmp_path / "src") as harness:
        yield harness


def error_of(h: LuauHarness, code: str) -> str:
    with pytest.raises(LuauError) as caught:
        h.eval(code)
    return caught.value.luau_message


def test_a_member_roblox_lacks_gets_studios_message(h: LuauHarness) -> None:
    message = error_of(h, 'local f = Instance.new("Frame"); f.Name = "Box"; return f.Colour')
    assert message.endswith('Colour is not a valid member of Frame "Box"')
    message = error_of(h, 'Instance.new("TextLabel").Txet = "typo"')
    assert message.endswith('Txet is not a valid member of TextLabel "TextLabel"')


def test_a_member_the_stand_in_defines_but_the_dump_lacks_is_refused(h: LuauHarness) -> None:
    """The runtime check does not trust the stand-in's tables: a member slipped into them that
    Roblox does not have still fails the way Studio would."""
    classes = h._H.get("Classes")
    frame = classes.get("Frame")
    frame.get("props").set("Bogus", frame.get("props").get("Visible"))
    frame.get("methods").set("Wobble", h.lua.load_chunk("return function() return 1 end")()[0])
    assert error_of(h, 'return Instance.new("Frame").Bogus').endswith(
        'Bogus is not a valid member of Frame "Frame"'
    )
    assert error_of(h, 'Instance.new("Frame").Bogus = true').endswith(
        'Bogus is not a valid member of Frame "Frame"'
    )
    assert error_of(h, 'return Instance.new("Frame"):Wobble()').endswith(
        'Wobble is not a valid member of Frame "Frame"'
    )


def test_deprecated_members_and_enum_items_are_refused_with_the_replacement(
    h: LuauHarness,
) -> None:
    message = error_of(h, 'return plugin:CreateDockWidgetPluginGui("W", nil)')
    assert "Plugin.CreateDockWidgetPluginGui is deprecated" in message
    assert "use CreateDockWidgetPluginGuiAsync" in message
    assert "deprecated" in error_of(h, "return plugin:GetStudioUserId()")
    assert "Enum.SortOrder.Custom is deprecated" in error_of(h, "return Enum.SortOrder.Custom")


def test_read_only_for_a_plugin_follows_the_dump(h: LuauHarness) -> None:
    assert "read only" in error_of(h, "plugin.GridSize = 4")
    assert "read only" in error_of(h, 'game:GetService("HttpService").HttpEnabled = false')
    assert "read only" in error_of(h, "game.PlaceId = 1")


def test_what_roblox_has_but_the_harness_does_not_model_says_so(h: LuauHarness) -> None:
    api = load()
    modelled = set(from_lua(h.call(h._H.get("describeClasses"))[0])["Frame"]["props"])
    unmodelled = next(
        name
        for name in ("SelectionImageObject", "NextSelectionUp", "SelectionGroup")
        if name not in modelled and (m := api.member("Frame", name)) and not m.deprecated
    )
    message = error_of(h, f'return Instance.new("Frame").{unmodelled}')
    assert f"Frame.{unmodelled} exists in Roblox but the harness does not model it" in message
    assert "does not model" in error_of(h, 'return game:GetService("Workspace")')
    assert "does not model" in error_of(h, 'return Instance.new("Tool")')


def test_services_classes_and_enums_roblox_lacks(h: LuauHarness) -> None:
    assert "'Nope' is not a valid Service name" in error_of(h, 'game:GetService("Nope")')
    assert 'Unable to create an Instance of type "Nope"' in error_of(h, 'Instance.new("Nope")')
    assert 'Unable to create an Instance of type "HttpService"' in error_of(
        h, 'Instance.new("HttpService")'
    )
    assert 'Nope is not a valid member of "Enum"' in error_of(h, "return Enum.Nope")
    assert 'Nope is not a valid member of "Enum.Font"' in error_of(h, "return Enum.Font.Nope")
    assert "is not a valid property name" in error_of(
        h, 'Instance.new("Frame"):GetPropertyChangedSignal("Colour")'
    )


def test_enums_carry_roblox_names_and_values(h: LuauHarness) -> None:
    values = from_lua(
        h.eval(
            """
            return {
                Enum.UserInputType.None.Value, Enum.KeyCode.Return.Value,
                Enum.StudioStyleGuideColor.MainText.Value, #Enum.Font:GetEnumItems() > 40,
                Enum.SortOrder:FromValue(2).Name,
            }
            """
        )[0]
    )
    api = load()
    assert values == [
        api.enum("UserInputType")[0]["None"],  # type: ignore[index]
        13,
        api.enum("StudioStyleGuideColor")[0]["MainText"],  # type: ignore[index]
        True,
        "LayoutOrder",
    ]


def test_create_dock_widget_plugin_gui_async_yields(h: LuauHarness) -> None:
    h.eval(
        """
        task.spawn(function()
            local info = DockWidgetPluginGuiInfo.new(Enum.InitialDockState.Float, true)
            local w = plugin:CreateDockWidgetPluginGuiAsync("Yielding", info)
            print("made", w.Name, w.ClassName)
        end)
        print("caller went on")
        """
    )
    h.step()
    assert h.printed == ["caller went on", "made Yielding DockWidgetPluginGui"]


# -- the derived file ------------------------------------------------------------------------------


TINY_DUMP: dict[str, Any] = {
    "Classes": [
        {
            "Name": "Thing",
            "Superclass": "Instance",
            "Tags": ["NotCreatable", "Service", "NotBrowsable"],
            "Members": [
                {
                    "MemberType": "Property",
                    "Name": "Open",
                    "Security": {"Read": "None", "Write": "None"},
                },
                {
                    "MemberType": "Property",
                    "Name": "Locked",
                    "Security": {"Read": "None", "Write": "LocalUserSecurity"},
                },
                {
                    "MemberType": "Property",
                    "Name": "Fixed",
                    "Security": {"Read": "PluginSecurity", "Write": "PluginSecurity"},
                    "Tags": ["ReadOnly"],
                },
                {"MemberType": "Function", "Name": "Secret", "Security": "RobloxScriptSecurity"},
                {
                    "MemberType": "Property",
                    "Name": "Hidden",
                    "Security": {"Read": "None", "Write": "None"},
                    "Tags": ["NotScriptable"],
                },
                {
                    "MemberType": "Function",
                    "Name": "Old",
                    "Security": "PluginSecurity",
                    "Tags": ["Yields", "Deprecated", {"PreferredDescriptorName": "OldAsync"}],
                },
                {
                    "MemberType": "Function",
                    "Name": "OldAsync",
                    "Security": "None",
                    "Tags": ["Yields"],
                },
                {"MemberType": "Event", "Name": "Poked", "Security": "None"},
                {"MemberType": "Callback", "Name": "OnAsk", "Security": "None"},
            ],
        },
        {"Name": "Instance", "Superclass": "<<<ROOT>>>", "Members": []},
    ],
    "Enums": [
        {
            "Name": "Mode",
            "Items": [
                {"Name": "A", "Value": 0},
                {"Name": "B", "Value": 1, "Tags": ["Deprecated"]},
            ],
        }
    ],
}


def test_derive_keeps_what_a_plugin_may_use_with_its_flags() -> None:
    raw = json.dumps(TINY_DUMP).encode()
    data = derive(TINY_DUMP, raw, "0.1.0")
    assert data["studio_version"] == "0.1.0"
    assert data["dump_sha256"] == hashlib.sha256(raw).hexdigest()
    assert data["classes"]["Thing"] == [
        "Instance",
        "NotCreatable Service",
        {
            "Fixed": "Pr",
            "Locked": "Pr",
            "Old": "Fyd:OldAsync",
            "OldAsync": "Fy",
            "OnAsk": "C",
            "Open": "P",
            "Poked": "E",
        },
    ]
    assert data["enums"] == {"Mode": [{"A": 0, "B": 1}, ["B"]]}
    api = RobloxApi(json.loads(render(data)))
    old = api.member("Thing", "Old")
    assert old is not None and old.deprecated and old.yields and old.preferred == "OldAsync"
    assert api.member("Thing", "Secret") is None and api.member("Thing", "Hidden") is None
    assert api.ancestry("Thing") == ["Thing", "Instance"]


def test_the_committed_file_is_canonical_and_matches_the_dump_when_present() -> None:
    text = DATA_FILE.read_text(encoding="utf-8")
    data = json.loads(text)
    assert render(data) == text, "roblox_api.json was edited by hand: regenerate it"
    assert data["studio_version"] and len(data["dump_sha256"]) == 64
    dump = find_dump()
    if dump is not None:  # the dump is reference material outside the repository (not in CI)
        assert derive_file(dump) == text, (
            "roblox_api.json is stale: python -m tools.luau_harness.roblox_api"
        )
