"""Generate the course's review corpus (`reviews.tsv`) and check the prompt set (`prompts.txt`).

A small template grammar writes short, fluent one- or two-sentence reviews of movies,
restaurants and products, half positive and half negative. Positive and negative reviews share
the same openings ("The movie was", "I ordered the pasta and", ...), so a language model trained
on them can continue any prompt in `prompts.txt` either way: that is the room a policy gradient
needs to move sentiment. Deterministic: the same seed gives the same file, byte for byte.

    python data/make_reviews.py            # rewrites data/reviews.tsv, checks data/prompts.txt
    python data/make_reviews.py --check    # only verifies that the committed file is reproduced
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 2024
NUM_REVIEWS = 5000  # half positive, half negative

ADVERBS = ["", "", "", "really ", "truly ", "absolutely ", "incredibly ", "surprisingly ", "genuinely ",
           "remarkably ", "pretty ", "so ", "quite ", "thoroughly "]
OPENERS = ["Honestly", "To be honest", "In my opinion", "Overall", "All in all", "Without a doubt", "Frankly"]
COMPANIONS = ["my wife", "my husband", "my sister", "my brother", "my best friend", "my parents",
              "my girlfriend", "my boyfriend", "my kids", "my roommate", "my coworkers", "my friends"]


def G(names, pos_adj, neg_adj, pos_clause=(), neg_clause=()):
    """An aspect group: names (text, plural[, head nouns of the topics it fits]) with the adjectives
    and clauses that fit all of them."""
    return dict(names=names, adj={1: pos_adj, 0: neg_adj}, clause={1: list(pos_clause), 0: list(neg_clause)})


# Each domain: subjects (text, plural), aspect groups, adjectives and clauses by polarity (1 = positive).
DOMAINS = {
    "movie": dict(
        subjects=[("the movie", 0), ("this film", 0), ("the sequel", 0), ("the documentary", 0),
                  ("the new thriller", 0), ("this comedy", 0), ("the remake", 0), ("the animated film", 0),
                  ("the horror movie", 0), ("the drama", 0), ("the musical", 0), ("the series finale", 0),
                  ("the war movie", 0), ("this romantic comedy", 0)],
        groups=[
            G([("the acting", 0), ("the script", 0), ("the dialogue", 0), ("the cinematography", 0),
               ("the soundtrack", 0), ("the score", 0), ("the visuals", 1), ("the special effects", 1)],
              ["superb", "brilliant", "excellent", "gorgeous", "sharp", "top notch", "beautifully done",
               "spot on", "perfect", "stunning"],
              ["awful", "weak", "flat", "lazy", "clumsy", "poorly done", "forgettable", "laughable", "cheap",
               "all over the place"],
              ["blew me away", "gave me chills", "deserves every award", "was the best part of the film"],
              ["ruined the whole film", "fell completely flat", "was the worst part of the film",
               "felt lazy and rushed"]),
            G([("the plot", 0), ("the story", 0), ("the ending", 0), ("the twist", 0)],
              ["clever", "gripping", "surprising", "moving", "satisfying", "brilliant", "original"],
              ["predictable", "confusing", "silly", "weak", "rushed", "ridiculous", "lazy"],
              ["kept me guessing until the very end", "stayed with me for days",
               "held my attention from start to finish", "took my breath away"],
              ["made no sense at all", "dragged on forever", "put me to sleep", "was obvious from the first scene"]),
            G([("the cast", 0), ("the lead actress", 0), ("the villain", 0), ("the hero", 0), ("the characters", 1)],
              ["charming", "convincing", "memorable", "wonderful", "hilarious", "fantastic"],
              ["annoying", "flat", "unconvincing", "forgettable", "wooden", "dull"],
              ["carried the whole film", "had me laughing the whole time", "made me care from the first scene"],
              ["was impossible to care about", "got on my nerves", "made me check my phone"]),
        ],
        adj={1: ["wonderful", "brilliant", "fantastic", "gripping", "charming", "hilarious", "moving",
                 "beautiful", "unforgettable", "delightful", "thrilling", "clever", "touching", "superb",
                 "stunning", "heartwarming", "captivating", "excellent", "refreshing", "powerful", "fun",
                 "smart", "inspiring", "a real treat", "a masterpiece", "worth the wait"],
             0: ["boring", "dull", "awful", "terrible", "predictable", "painful", "forgettable",
                 "disappointing", "confusing", "tedious", "clumsy", "lifeless", "messy", "ridiculous",
                 "bland", "pointless", "exhausting", "dreadful", "weak", "mediocre", "a mess",
                 "a letdown", "a chore to sit through", "a waste of time", "far too long", "cheesy"]},
        act="watched",
        when=["last night", "on Friday", "over the weekend", "yesterday", "last week", "on a rainy Sunday",
              "for my birthday", "after work", "on a long flight", "at the theater"],
        after={1: ["I loved every minute of it", "it was worth every minute", "it blew me away",
                   "I was smiling the whole time", "it made my night", "I want to see it again"],
               0: ["I nearly walked out", "I regretted it within ten minutes", "I fell asleep halfway through",
                   "it was a complete waste of time", "I was bored the whole time", "I want those two hours back"]},
        we={1: ["we loved every minute of it", "we laughed the whole time", "we both left smiling",
                "we talked about it all the way home", "we are already planning to see it again"],
            0: ["we both fell asleep", "we left halfway through", "we regretted it", "we were bored stiff",
                "we could not wait for it to end"]},
        went="watched",
        verdict={1: ["I would definitely recommend it.", "Highly recommended.",
                     "I would watch it again in a heartbeat.",
                     "Five stars from me.", "Go see it.", "It is one of the best films of the year.",
                     "I can't wait for the next one."],
                 0: ["I would not recommend it.", "Save your money.", "What a waste of time.", "Skip this one.",
                     "One star, and that is generous.", "I want my money back.", "Never again."]},
        mild={1: ["a bit long", "a little slow at the start", "not perfect", "a bit too loud"],
              0: ["nice to look at", "promising at first", "well marketed", "short"]},
        tense=("was", "were"),
    ),
    "restaurant": dict(
        subjects=[("the restaurant", 0), ("this place", 0), ("the cafe", 0), ("the new bistro", 0),
                  ("the diner", 0), ("the bakery", 0), ("the pizzeria", 0), ("the food truck", 0),
                  ("the sushi bar", 0), ("the steakhouse", 0), ("the taco stand", 0), ("the noodle shop", 0)],
        groups=[
            G([("the food", 0), ("the pasta", 0), ("the soup", 0), ("the bread", 0), ("the dessert", 0),
               ("the pizza", 0), ("the coffee", 0), ("the fries", 1), ("the noodles", 1)],
              ["delicious", "fresh", "flavorful", "outstanding", "excellent", "amazing", "superb", "wonderful"],
              ["cold", "bland", "tasteless", "stale", "awful", "far too salty", "disappointing", "lukewarm"],
              ["was the best part of the night", "exceeded every expectation", "was worth the trip alone",
               "came out fast and piping hot"],
              ["came out cold", "was the worst part of the night", "tasted like it had been reheated",
               "was a huge disappointment"]),
            G([("the service", 0), ("the staff", 0), ("the waiter", 0), ("the owner", 0), ("the waitress", 0)],
              ["friendly", "attentive", "quick", "warm", "welcoming", "helpful", "lovely"],
              ["rude", "slow", "careless", "unfriendly", "dismissive", "chaotic", "useless"],
              ["treated us like family", "made the whole evening", "went above and beyond"],
              ["ignored us for twenty minutes", "got our order wrong twice", "ruined the whole evening"]),
            G([("the atmosphere", 0), ("the music", 0), ("the decor", 0), ("the patio", 0)],
              ["cozy", "relaxing", "charming", "lovely", "perfect"],
              ["loud", "dreary", "cramped", "depressing", "awkward"],
              ["felt warm and inviting", "made us want to stay all night"],
              ["made it hard to talk", "felt cold and unwelcoming"]),
            G([("the portions", 1), ("the prices", 1)],
              ["generous", "fair", "reasonable", "great"], ["tiny", "ridiculous", "absurd", "insulting"]),
        ],
        adj={1: ["delicious", "wonderful", "fantastic", "amazing", "excellent", "lovely", "outstanding",
                 "superb", "cozy", "charming", "a real gem", "worth the trip", "perfect", "great",
                 "a delight", "spotless", "welcoming"],
             0: ["awful", "terrible", "disappointing", "dirty", "overpriced", "bland", "a mess", "mediocre",
                 "a letdown", "depressing", "noisy and cramped", "a disaster", "horrible", "greasy",
                 "forgettable", "not worth the money"]},
        act="ordered", objects=["the pasta", "the burger", "the soup", "the salmon", "the pizza", "the lasagna",
                                "the curry", "the steak", "the ramen", "the salad", "the burrito",
                                "the fried chicken"],
        when=["for lunch", "for dinner", "for brunch", "last night", "on Friday", "for my birthday",
              "on our anniversary", "after work", "yesterday"],
        after={1: ["it was delicious", "it was perfectly cooked", "it was the best I have ever had",
                   "it came out hot and fresh", "it was full of flavor", "it was worth every penny",
                   "I cleaned my plate"],
               0: ["it was cold", "it was bland and greasy", "it was the worst I have ever had",
                   "it came out burnt", "it had no flavor at all", "it was overpriced and tiny",
                   "I could not finish it"]},
        we={1: ["the food was amazing", "everything was delicious", "we had a wonderful time",
                "the staff made us feel at home", "we are already planning our next visit"],
            0: ["the food was awful", "everything was cold", "we had a miserable time",
                "the staff ignored us", "we will never go back"]},
        went="went to",
        verdict={1: ["We will be back soon.", "Highly recommended.", "I can't wait to go back.",
                     "Five stars from me.", "Easily the best meal I have had in years.", "Go hungry."],
                 0: ["We will not be back.", "Avoid it.", "Save your money.", "Never again.",
                     "One star, and that is generous.", "I would not recommend it."]},
        mild={1: ["a little pricey", "a bit noisy", "hard to find", "busy"],
              0: ["nicely decorated", "cheap", "easy to find", "quiet"]},
        tense=("was", "were"),
    ),
    "product": dict(
        subjects=[("the headphones", 1), ("this blender", 0), ("the laptop", 0), ("the phone case", 0),
                  ("the vacuum cleaner", 0), ("the backpack", 0), ("the charger", 0), ("this coffee maker", 0),
                  ("the keyboard", 0), ("these running shoes", 1), ("the desk lamp", 0), ("the water bottle", 0),
                  ("the tent", 0), ("the smart watch", 0), ("this speaker", 0), ("the mattress", 0)],
        groups=[
            G([("the battery", 0, "headphones laptop watch speaker cleaner"),
               ("the battery life", 0, "headphones laptop watch speaker")],
              ["excellent", "amazing", "impressive", "great"], ["terrible", "awful", "pathetic", "useless"],
              ["lasts all day", "lasts for days", "charges in no time"],
              ["dies within an hour", "barely lasts a morning", "takes forever to charge"]),
            G([("the build quality", 0), ("the sound quality", 0, "headphones speaker laptop"),
               ("the screen", 0, "laptop watch"), ("the design", 0),
               ("the material", 0, "case backpack shoes tent mattress"),
               ("the finish", 0, "blender laptop case maker lamp bottle watch speaker")],
              ["excellent", "solid", "impressive", "sleek", "top notch", "great"],
              ["poor", "cheap", "flimsy", "awful", "disappointing"],
              ["feels very premium", "exceeded my expectations", "is the best I have seen at this price"],
              ["feels cheap and flimsy", "looks nothing like the photos", "is a real disappointment"]),
            G([("the customer support", 0), ("the instructions", 1), ("the setup", 0)],
              ["helpful", "clear", "quick", "excellent", "simple"], ["useless", "confusing", "unhelpful", "awful"],
              ["took five minutes", "could not have been easier"],
              ["took me a whole afternoon", "was a nightmare from start to finish"]),
            G([("the zipper", 0, "backpack tent"), ("the cable", 0, "headphones charger keyboard lamp"),
               ("the buttons", 1, "headphones case blender maker watch speaker"),
               ("the strap", 0, "backpack watch"), ("the lid", 0, "blender maker bottle"),
               ("the laces", 1, "shoes"), ("the soles", 1, "shoes"), ("the keys", 1, "keyboard laptop")],
              ["sturdy", "solid", "smooth", "reliable"], ["flimsy", "fragile", "loose", "cheap"],
              ["has held up perfectly", "works as well as on day one"],
              ["broke after a week", "stopped working on day two"]),
            G([("the price", 0)], ["reasonable", "fair", "great", "hard to beat"],
              ["ridiculous", "way too high", "a joke"]),
        ],
        adj={1: ["sturdy", "reliable", "comfortable", "well made", "easy to use", "excellent", "solid",
                 "lightweight", "perfect", "great value", "a joy to use", "worth every penny", "fantastic",
                 "exactly what I needed", "better than expected", "quiet and powerful"],
             0: ["flimsy", "cheap", "useless", "uncomfortable", "overpriced", "noisy", "fragile",
                 "disappointing", "defective", "a waste of money", "a total letdown", "awful", "poorly made",
                 "worse than expected", "junk", "hard to use"]},
        act="bought",
        when=["last week", "a month ago", "on sale", "as a gift", "for my new apartment", "online"],
        after={1: ["it works perfectly", "I love it", "it has been great so far", "it works exactly as described",
                   "I use it every day", "it arrived early and works great"],
               0: ["it broke within a week", "I regret it", "it stopped working after two days",
                   "it never worked properly", "I returned it the next day", "it arrived damaged"]},
        we={},
        went="",
        verdict={1: ["Worth every penny.", "Highly recommended.", "I would buy it again.", "Five stars from me.",
                     "Best purchase I have made this year.", "I already ordered a second one."],
                 0: ["I want my money back.", "Avoid it.", "Save your money.", "I would not buy it again.",
                     "One star, and that is generous.", "I returned it the next day."]},
        event={1: ["still looks brand new", "has held up perfectly", "is still as good as new",
                   "has not given me a single problem", "is still my favorite thing I own"],
               0: ["fell apart", "is already falling apart", "already looks worn out",
                   "has been nothing but trouble", "is practically useless"]},
        durations=["two weeks", "a month", "three days", "six months", "a year", "a few weeks"],
        mild={1: ["a bit bulky", "a bit heavy", "slow to arrive", "plain looking"],
              0: ["nice looking", "cheap", "well packaged", "fast to arrive"]},
        tense=("is", "are"),
    ),
}


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


def fits(aspect: tuple, topic: tuple) -> bool:
    """Whether an aspect (text, plural[, head nouns it fits]) belongs to a topic (text, plural)."""
    return len(aspect) < 3 or topic[0].split()[-1] in aspect[2].split()


def sentence(rng: random.Random, domain: str, pos: int, topic: tuple, avoid: str = "") -> tuple[str, str]:
    """One review sentence of polarity `pos` (1 positive, 0 negative) about `topic` (text, plural).

    With `avoid` set (the aspect the first sentence used) it is a second sentence: it only adds
    another aspect of the same topic. Returns (sentence, aspect used).
    """
    d = DOMAINS[domain]
    c = rng.choice
    subj, plural = topic
    be = d["tense"][plural]
    groups = [g for g in d["groups"] if any(fits(a, topic) and a[0] != avoid for a in g["names"])]
    group = c(groups)
    names = [a for a in group["names"] if fits(a, topic) and a[0] != avoid]
    aspect, aplural = c(names)[:2]
    abe = d["tense"][aplural]
    aspect_adj = c(group["adj"][pos])
    adj = c(d["adj"][pos])

    def adv(word: str) -> str:  # an adverb only before a one-word adjective
        return "" if " " in word else c(ADVERBS)

    kinds = ["aspect_first", "aspect_clause"]
    if not avoid:
        kinds += ["plain", "plain", "two_adj", "aspect", "opener", "mixed"]
        if domain == "product":
            kinds += [] if plural else ["act", "act", "after_use", "after_use"]
        else:
            kinds += ["act", "act", "we"]
    kind = c(kinds)
    if kind == "aspect_clause":
        singular = [a[0] for a in names if not a[1]]  # the clauses are written for one thing
        if not group["clause"][pos] or not singular:
            kind = "aspect_first"
        else:
            aspect = c(singular)
            return f"{cap(aspect)} {c(group['clause'][pos])}.", aspect
    if kind == "aspect_first":
        opener = c(OPENERS) + ", " if rng.random() < 0.2 else ""
        return cap(f"{opener}{aspect} {abe} {adv(aspect_adj)}{aspect_adj}."), aspect
    if kind == "plain":
        return f"{cap(subj)} {be} {adv(adj)}{adj}.", ""
    if kind == "two_adj":
        one_word = [a for a in d["adj"][pos] if " " not in a]
        adj1 = c(one_word)
        adj2 = c([a for a in one_word if a != adj1])
        return f"{cap(subj)} {be} {adj1} and {adj2}.", ""
    if kind == "aspect":
        return f"{cap(subj)} {be} {adv(adj)}{adj}, and {aspect} {abe} {aspect_adj}.", aspect
    if kind == "act":
        obj = subj if domain != "restaurant" else c(d["objects"])
        when = c(d["when"]) + " " if rng.random() < 0.4 else ""
        return f"I {d['act']} {obj} {when}and {c(d['after'][pos])}.", ""
    if kind == "opener":
        return f"{c(OPENERS)}, {subj} {be} {adv(adj)}{adj}.", ""
    if kind == "mixed":  # the verdict is the second clause's
        return f"{cap(subj)} {be} {c(d['mild'][pos])}, but {aspect} {abe} {aspect_adj}.", aspect
    if kind == "we":
        return f"{cap(c(COMPANIONS))} and I {d['went']} {subj} {c(d['when'])}, and {c(d['we'][pos])}.", ""
    if kind == "after_use":
        return f"After {c(d['durations'])} of use, {subj} {c(d['event'][pos])}.", ""
    raise AssertionError(kind)


def review(rng: random.Random, pos: int) -> str:
    """One or two sentences of one polarity about one topic."""
    domain = rng.choice(list(DOMAINS))
    topic = rng.choice(DOMAINS[domain]["subjects"])
    text, aspect = sentence(rng, domain, pos, topic)
    r = rng.random()
    if r < 0.35:
        text += " " + rng.choice(DOMAINS[domain]["verdict"][pos])
    elif r < 0.5:
        text += " " + sentence(rng, domain, pos, topic, avoid=aspect or "-")[0]
    return text


def make_reviews(seed: int = SEED, n: int = NUM_REVIEWS) -> list[tuple[str, str]]:
    """`n` unique (label, text) pairs, alternating positive and negative, in a seeded order."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    while len(rows) < n:
        pos = len(rows) % 2 == 0
        text = review(rng, int(pos))
        if text not in seen:
            seen.add(text)
            rows.append(("positive" if pos else "negative", text))
    rng.shuffle(rows)
    return rows


def to_tsv(rows: list[tuple[str, str]]) -> str:
    return "label\ttext\n" + "".join(f"{label}\t{text}\n" for label, text in rows)


def check_prompts(rows: list[tuple[str, str]], prompts: list[str], min_each: int = 3) -> list[str]:
    """Prompts that do not open at least `min_each` positive and `min_each` negative reviews."""
    bad = []
    for p in prompts:
        counts = {"positive": 0, "negative": 0}
        for label, text in rows:
            if text.startswith(p + " ") or text.startswith(p + ","):
                counts[label] += 1
        if min(counts.values()) < min_each:
            bad.append(f"{p!r}: {counts}")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify data/reviews.tsv is reproduced; write nothing")
    args = parser.parse_args()
    rows = make_reviews()
    tsv = to_tsv(rows)
    out = HERE / "reviews.tsv"
    if args.check:
        if out.read_text(encoding="utf-8") != tsv:
            print(f"{out} differs from what make_reviews.py generates", file=sys.stderr)
            return 1
    else:
        out.write_text(tsv, encoding="utf-8")
    prompts = [p for p in (HERE / "prompts.txt").read_text(encoding="utf-8").splitlines() if p.strip()]
    bad = check_prompts(rows, prompts)
    if bad:
        print("prompts without both continuations in the corpus:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    n_pos = sum(label == "positive" for label, _ in rows)
    print(f"{len(rows)} reviews ({n_pos} positive), {len(tsv.encode()) / 1024:.0f} KiB; {len(prompts)} prompts ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
