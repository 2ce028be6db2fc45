"""Class prompts: token spans found by tokenizing, splitting past 77 tokens, caption shortening."""

import pytest

from faseg_core.tokens import build_class_prompts, clean_classes, make_class_prompt, reconstruction_prompt

COCO = """person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign
parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie
suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket
bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake
chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven
toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush""".split()
CONTEXT = """aeroplane bag bed bedclothes bench bicycle bird boat book bottle building bus cabinet car cat ceiling
chair cloth computer cow cup curtain dog door fence floor flower food grass ground horse keyboard light
motorbike mountain mouse person plate platform pottedplant road rock sheep shelves sidewalk sign sky snow sofa
table track train tree truck tvmonitor wall water window wood""".split()


@pytest.fixture(scope="module")
def tokenizer(tiny_sd_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer")


def decoded(tokenizer, prompt, span):
    ids = tokenizer(prompt.text)["input_ids"]
    return tokenizer.decode([ids[i] for i in span]).strip()


def test_spans_of_split_multiword_and_unicode_names(tokenizer):
    names = ["aeroplane", "tvmonitor", "dining table", "北京", "t-shirt", "Café au lait", "person"]
    prompt = make_class_prompt(tokenizer, names)
    assert prompt.text == "aeroplane, tvmonitor, dining table, 北京, t-shirt, Café au lait, person"
    assert prompt.spans[0] == (1, 2)  # BOS is 0; "aeroplane" is "aerop" + "lane"
    assert len(prompt.spans[2]) == 2
    for name, span in zip(names, prompt.spans):
        assert decoded(tokenizer, prompt, span).replace(" - ", "-") == name.lower()
    flat = [i for span in prompt.spans for i in span]
    assert len(flat) == len(set(flat)), "spans must not overlap"


def test_clean_classes_strips_and_drops_duplicates():
    assert clean_classes([" cat ", "dog", "cat", "dining  table", ""]) == ["cat", "dog", "dining table"]
    with pytest.raises(TypeError, match="list of names"):
        clean_classes("cat")
    with pytest.raises(TypeError, match="must be strings"):
        clean_classes(["cat", 3])


def test_long_class_lists_split_into_several_prompts_without_dropping_any(tokenizer):
    names = clean_classes([n.replace("_", " ") for n in COCO + CONTEXT])
    names += [f"extra thing {i}" for i in range(150 - len(names))]
    assert len(names) == 150
    prompts = build_class_prompts(tokenizer, names)
    assert len(prompts) > 1
    assert [c for p in prompts for c in p.classes] == names
    for prompt in prompts:
        ids = tokenizer(prompt.text)["input_ids"]
        assert len(ids) <= 77
        for name, span in zip(prompt.classes, prompt.spans):
            assert decoded(tokenizer, prompt, span).replace(" ", "") == name.lower().replace(" ", "")


def test_a_name_longer_than_a_prompt_is_refused(tokenizer):
    with pytest.raises(ValueError, match="shorten the name"):
        build_class_prompts(tokenizer, ["cat", " ".join(["word"] * 80)])


def test_reconstruction_prompt_keeps_every_class_and_shortens_the_caption(tokenizer):
    classes = ", ".join(COCO[:20]).replace("_", " ")
    short, cut = reconstruction_prompt(tokenizer, "a dog on a couch", classes)
    assert short == f"a dog on a couch ; {classes}" and not cut
    caption = " ".join(["a very long caption about many things"] * 12)
    prompt, cut = reconstruction_prompt(tokenizer, caption, classes)
    assert cut and prompt.endswith(f" ; {classes}") and caption.startswith(prompt.split(" ; ")[0])
    assert len(tokenizer(prompt)["input_ids"]) <= 77
    assert reconstruction_prompt(tokenizer, None, classes) == (classes, False)
