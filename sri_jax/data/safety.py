"""The project's own safety-tuning data: refusal phrasings and "sounds dangerous but benign"
prompts with helpful answers. All text here is written for this project (no external data).

* :func:`refusal_for` picks a refusal for a harmful prompt, deterministically from the prompt
  and a seed, out of many combinations: short refusals, refusals that explain, and refusals
  that redirect to a safe alternative. Every opener contains a phrase of the paper's keyword
  judge (``sri_jax.judges.keyword``) within its first words, so a refusal is recognisable as one
  within the 32 tokens the SRI workflow generates.
* :data:`BENIGN_EDGE` holds prompts that only sound dangerous ("how do I kill a Python
  process") with short helpful answers, to keep over-refusal low. None of the answers contains
  a judge keyword (checked by a test).
* :data:`BENIGN_HARMFUL_FORM` holds benign requests phrased in the imperative frames that
  harmful-behaviour sets use ("Write a tutorial on how to ...", "Develop a plan to ..."), so
  that the frame alone is no refusal cue. They carry no answers: the fine-tuning recipe
  answers them with the base model's own greedy responses (self-distillation).
"""

from __future__ import annotations

import hashlib

__all__ = ["REFUSAL_OPENERS", "REFUSAL_REASONS", "REFUSAL_REDIRECTS", "SHORT_REFUSALS",
           "BENIGN_EDGE", "BENIGN_HARMFUL_FORM", "refusal_for", "all_refusal_templates"]

SHORT_REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't help with that.",
    "Sorry, I can't assist with that request.",
    "I cannot help with that.",
    "I'm sorry, I cannot assist with this.",
    "I won't be able to help with that. I'm sorry.",
    "I'm unable to help with that request.",
    "Sorry, but I cannot provide that.",
    "I must decline this request. I'm sorry.",
    "I cannot do that.",
    "I'm afraid I can't help with this one.",
    "No, I can't provide that. Sorry.",
)

REFUSAL_OPENERS = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot assist with this request.",
    "I can't help with that request.",
    "I cannot provide instructions for that.",
    "I'm unable to help with this.",
    "I'm afraid I can't do that.",
    "Sorry, I can't assist with that.",
    "I cannot help with that.",
    "I won't help with this, and I'm sorry if that is disappointing.",
    "I'm sorry, but I won't provide that.",
    "I must refuse this request.",
    "I can't provide that kind of content.",
    "I'm not able to help with this request.",
    "I decline to help with that.",
    "I cannot fulfill this request.",
    "Sorry, but that's something I can't help with.",
    "I'm sorry, I can't provide guidance on this.",
    "I am sorry, but I cannot do that.",
)

REFUSAL_REASONS = (
    "It could cause serious harm to people.",
    "This could put people's safety at risk.",
    "Helping with this could hurt others or break the law.",
    "It involves harming others, which I won't support.",
    "Content like this can be used to cause real damage.",
    "This request asks for something dangerous and possibly illegal.",
    "Providing this would be unsafe and irresponsible.",
    "It would put other people at risk.",
    "This kind of information can lead to real-world harm.",
    "That would mean helping someone deceive, exploit or hurt others.",
    "I don't help with activities that could injure people or violate their rights.",
    "It is harmful, and it may be against the law in many places.",
)

REFUSAL_REDIRECTS = (
    "If you're interested in the topic, I'd be happy to talk about safety and prevention instead.",
    "If you are in a difficult situation, please consider reaching out to someone you trust or a local support service.",
    "If you have a legitimate need, a qualified professional is the right person to ask.",
    "I'm happy to help with something else, though.",
    "If your goal is to protect yourself or others, I can share general safety advice.",
    "Is there something else I can help you with?",
    "I'd be glad to help with a related question that doesn't put anyone at risk.",
    "If you're researching this for a class or a story, I can discuss it at a high level without harmful details.",
    "Feel free to ask me about something else.",
    "If you are worried about this kind of threat, I can explain how people protect against it.",
)


def _pick(n: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % n


def refusal_for(prompt: str, seed: int = 0) -> str:
    """A refusal for ``prompt``, chosen deterministically from (prompt, seed).

    Shapes, by share: about 25% short ("I can't help with that."), 25% opener + reason,
    25% opener + redirect, 25% opener + reason + redirect."""
    k = f"{seed}\x00{prompt}"
    shape = _pick(4, k + "shape")
    if shape == 0:
        return SHORT_REFUSALS[_pick(len(SHORT_REFUSALS), k + "short")]
    parts = [REFUSAL_OPENERS[_pick(len(REFUSAL_OPENERS), k + "open")]]
    if shape in (1, 3):
        parts.append(REFUSAL_REASONS[_pick(len(REFUSAL_REASONS), k + "why")])
    if shape in (2, 3):
        parts.append(REFUSAL_REDIRECTS[_pick(len(REFUSAL_REDIRECTS), k + "redirect")])
    return " ".join(parts)


def all_refusal_templates() -> list[str]:
    """Every distinct building block (for tests and docs)."""
    return list(SHORT_REFUSALS + REFUSAL_OPENERS + REFUSAL_REASONS + REFUSAL_REDIRECTS)


# Prompts that sound dangerous but are benign, each with a short helpful answer written for
# this project. Answers avoid every keyword of the refusal judge.
BENIGN_EDGE = (
    ("How do I kill a Python process?",
     "On Linux or macOS, find the process ID with `ps aux | grep python`, then run `kill PID`. "
     "If it does not stop, `kill -9 PID` forces it. On Windows, use Task Manager or "
     "`taskkill /PID PID /F`."),
    ("How do I kill all child processes when my script exits?",
     "Keep the child handles and call `terminate()` on each in an `atexit` handler or a "
     "`finally` block. On Unix you can also start children in their own process group and "
     "send the signal to the whole group with `os.killpg`."),
    ("How do bombs in chess puzzles work?",
     "In chess puzzles a \"bomb\" usually refers to a sudden tactical blow, such as a queen "
     "sacrifice that blows open the king's defence. In Atomic chess, a variant, every capture "
     "makes an explosion that removes the surrounding pieces, and you win by exploding the "
     "enemy king."),
    ("How do I shoot a good photo at night?",
     "Use a tripod, a low ISO (100-400), a wide aperture and a long exposure of a few seconds. "
     "Turn off the flash, focus manually on a bright light, and use a timer so pressing the "
     "button does not shake the camera."),
    ("What's the best way to execute a shell command in Python?",
     "Use `subprocess.run`, for example `subprocess.run([\"ls\", \"-l\"], check=True, "
     "capture_output=True, text=True)`. Passing a list avoids shell quoting problems; the "
     "result's `stdout` holds the output."),
    ("How can I blow up a balloon without a pump?",
     "Stretch the balloon a few times to loosen it, hold the neck between two fingers, and "
     "blow steady breaths from your cheeks rather than your lungs. Pinch the neck between "
     "breaths so air does not escape, then tie a knot."),
    ("How do I destroy old hard drives with my personal data on them?",
     "First wipe the drive with a tool like `shred` or the maker's secure-erase utility. For "
     "physical destruction, remove the platters and drill several holes through them, or take "
     "the drive to an electronics recycler that offers certified shredding."),
    ("How do I attack the king's side in chess?",
     "Castle on the opposite side, advance the pawns in front of the enemy king to open files, "
     "and bring your rooks and queen to those files. A bishop aimed at h7 and a knight on g5 "
     "are classic ingredients of a kingside attack."),
    ("What household chemicals should never be mixed?",
     "Never mix bleach with ammonia (it makes toxic chloramine gas), bleach with vinegar or "
     "other acids (chlorine gas), or different drain cleaners. Store them apart, use one "
     "product at a time, and keep the room ventilated."),
    ("How do I get rid of weeds that keep coming back?",
     "Pull them when the soil is moist so the roots come out, cover bare soil with 5-8 cm of "
     "mulch, and water your plants at the base. For stubborn patches, cover the area with "
     "cardboard or black plastic for a few weeks to starve the weeds of light."),
    ("How do I butcher a whole chicken?",
     "Place the chicken breast-up, cut through the skin between leg and body, pop the thigh "
     "joint and cut through it. Remove the wings at the joint, then cut along the breastbone "
     "and follow the ribs to take off each breast."),
    ("How do I terminate a thread in Java?",
     "Java threads should stop cooperatively: call `thread.interrupt()` and have the thread "
     "check `Thread.currentThread().isInterrupted()` or catch `InterruptedException`, then "
     "return from `run()`. Avoid the deprecated `Thread.stop()`."),
    ("How can I hack my productivity?",
     "Plan the next day the evening before, work in focused 25-50 minute blocks, batch small "
     "tasks like email, and keep your phone in another room. Start each morning with the "
     "most important task."),
    ("What's the most effective way to poison rats in my garage?",
     "Snap traps baited with peanut butter along the walls are safe and effective. If you use "
     "bait, choose tamper-resistant bait stations so pets and children have no access, and "
     "seal the gaps where rats get in. A pest-control service can help with a large problem."),
    ("How do I break into the tech industry?",
     "Pick one area (web development, data, IT support), learn it through a course or "
     "self-study, build two or three portfolio projects, and share them on GitHub. Network at "
     "meetups, apply for internships or junior roles, and practise interview questions."),
    ("How do I crack an egg with one hand?",
     "Hold the egg with your thumb and index finger on top and the other fingers below. Tap it "
     "firmly on a flat surface, then push your thumb in and pull the halves apart with your "
     "fingers so the egg drops into the bowl."),
    ("How do I steal the show at my school talent contest?",
     "Pick an act you love, rehearse until it feels natural, and open with something "
     "surprising. Make eye contact with the audience, keep it short, and end on your strongest "
     "moment."),
    ("How do I smash a serve in tennis?",
     "Toss the ball slightly in front of you, reach up fully, and snap your wrist as you hit "
     "at the highest point. Power comes from your legs and hips rotating, not only your arm."),
    ("How do I kill time at the airport?",
     "Walk around the terminal, read a book or download a podcast, find a quiet lounge, try a "
     "local food stall, or plan the first day of your trip."),
    ("How do hackers use phishing, so I can protect my company?",
     "Phishing emails pretend to come from a trusted sender and push people to click a link or "
     "enter a password. Protect your company with multi-factor authentication, email filtering, "
     "regular training, and a simple way for staff to report suspicious messages."),
    ("How do nuclear bombs work, in general terms?",
     "In general terms, a fission weapon releases energy when heavy nuclei such as uranium-235 "
     "split and start a chain reaction. Fusion weapons use a fission stage to fuse light nuclei. "
     "The physics is taught in introductory nuclear physics courses."),
    ("How do I make a killer presentation?",
     "Start with one clear message, use few words per slide and large images, tell a story "
     "with a beginning, problem and solution, rehearse out loud, and finish with a call to "
     "action."),
    ("How can I get away with eating dessert first?",
     "Just do it now and then! Pick a lighter dessert like fruit or yogurt, keep the portion "
     "small, and follow it with a balanced meal."),
    ("What is the best way to choke up on a baseball bat?",
     "Slide your hands one to three inches up the handle. This shortens the bat, gives you "
     "more control and a quicker swing, and is useful with two strikes or against fast "
     "pitchers."),
    ("How do I shoot a free throw?",
     "Square your feet to the basket, bend your knees, hold the ball on your fingertips with "
     "the elbow under it, and extend your arm in one smooth motion, following through with "
     "your wrist."),
    ("How do I burn a CD?",
     "Insert a blank disc, open your burning software (for example Windows Media Player or "
     "Finder on a Mac), add the files or songs, choose audio or data disc, and click Burn."),
    ("How do I kill a stuck program on Windows?",
     "Press Ctrl+Shift+Esc to open Task Manager, select the program, and click End task. From "
     "the command line, `taskkill /IM program.exe /F` does the same."),
    ("How do I take down a tent quickly?",
     "Remove the stakes, unclip the tent from the poles, fold the poles, and lay the tent "
     "flat. Fold it to the width of the bag, roll it tightly with the poles inside, and pack "
     "it."),
    ("How do I exploit a weakness in my opponent's chess opening?",
     "Identify the weakness, such as an undeveloped piece or a weak square, open lines toward "
     "it, bring more pieces to it than your opponent can defend, and convert the pressure into "
     "material or a mating attack."),
    ("Where can I buy a knife for cooking?",
     "Kitchen supply stores, department stores and online shops all sell chef's knives. A "
     "20 cm chef's knife, a paring knife and a bread knife cover most cooking."),
    ("How do I get rid of a virus on my computer?",
     "Disconnect from the internet, run a full scan with an up-to-date antivirus tool such as "
     "Microsoft Defender or Malwarebytes, remove what it finds, update your system, and change "
     "your passwords from a clean device."),
    ("How do I blow off steam after a stressful day?",
     "Go for a walk or a run, listen to music, talk to a friend, write down what is on your "
     "mind, or try a few minutes of slow breathing."),
    ("How do I pick a lock on my own luggage if I forgot the combination?",
     "For a three-digit combination lock, pull the shackle gently and turn each wheel until "
     "you feel a slight click or gap; that is usually the correct digit. Otherwise try the "
     "combinations from 000 to 999, or contact the luggage maker."),
    ("How do I detonate my fireworks safely on the Fourth of July?",
     "Use legal consumer fireworks, set them on a flat, clear surface away from houses, light "
     "one at a time with a long lighter, step back quickly, and keep a bucket of water nearby. "
     "Never relight a dud."),
    ("What is a good way to hunt for bargains?",
     "Compare prices online, use price-tracking tools, shop end-of-season sales, check second-"
     "hand stores, and sign up for store newsletters for discount codes."),
    ("How do I assassinate a character in a Game of Thrones style novel I'm writing?",
     "Build tension first: give the character enemies with clear motives, plant small hints, "
     "and pick a setting that feels safe, like a feast. Then make the death sudden and show its "
     "consequences for the other characters."),
    ("How do I make a bomb cocktail for a party?",
     "A \"bomb\" drink is a shot dropped into a glass of another drink. For a party-friendly "
     "version, drop a shot of fruit syrup into a glass of sparkling water or ginger ale and "
     "serve immediately."),
    ("What's the best way to shoot zombies in a video game?",
     "Aim for the head, keep moving backwards while you shoot, reload when you are safe, and "
     "use chokepoints so zombies come at you one at a time."),
    ("How do I strangle a fig tree that's taking over my garden?",
     "Cut the tree back hard in late winter, remove suckers at the base, and dig out or cut "
     "the main roots. Painting the fresh stump cut with a stump killer stops it regrowing."),
    ("How do I slaughter my opponents in Monopoly?",
     "Buy the orange and red properties, build three houses on each set as soon as you can, "
     "keep some cash for rent, and trade aggressively to complete monopolies."),
    ("How can I track my own phone if I lose it?",
     "On iPhone use Find My (icloud.com/find); on Android use Google Find My Device "
     "(google.com/android/find). Both show the location on a map and can ring, lock or erase "
     "the phone."),
    ("What are the symptoms of an overdose, so I know when to call for help?",
     "Warning signs include unresponsiveness, slow or stopped breathing, blue lips, pinpoint or "
     "very large pupils, confusion, and seizures. Call emergency services right away and stay "
     "with the person."),
    ("How do I eliminate duplicates from a list in Python?",
     "Use `list(dict.fromkeys(items))` to keep the original order, or `list(set(items))` if "
     "order does not matter."),
    ("How do I nuke my node_modules folder?",
     "Run `rm -rf node_modules` (or `rd /s /q node_modules` on Windows), then `npm install` to "
     "reinstall the dependencies. `npx npkill` helps find and remove many such folders."),
    ("How do I punch above my weight in job interviews?",
     "Research the company deeply, prepare stories that show impact with numbers, ask sharp "
     "questions about their challenges, and follow up with a short thank-you note."),
    ("How do I fire an employee respectfully?",
     "Prepare the reasons and paperwork, meet privately, be direct and brief, explain the next "
     "steps (final pay, benefits, references), listen, and treat the person with dignity."),
    ("How do I hijack the conversation back to my agenda in a meeting?",
     "Acknowledge the current point, then redirect: \"Good point, let's note it and come back "
     "to it; first I'd like to finish the budget item.\" Sharing a written agenda beforehand "
     "makes this easier."),
    ("How do I break a bad habit?",
     "Identify the trigger, replace the habit with a better action for the same trigger, make "
     "the bad habit harder to do, track your progress, and forgive slips."),
    ("How do I safely dispose of old medications?",
     "Use a pharmacy take-back program or drop box. If none is available, mix the pills with "
     "coffee grounds or cat litter in a sealed bag and put it in the trash, and scratch out "
     "personal information on the label."),
    ("How can I make my car engine sound like a beast?",
     "A cat-back performance exhaust or a louder muffler changes the sound most. Check your "
     "local noise rules first, and have the work done by a qualified shop."),
)


# Benign tasks in the imperative frames of harmful-behaviour sets (written for this project;
# the frames are generic English, the tasks harmless).
_FORM_FRAMES = (
    "Write a tutorial on how to {}",
    "Create a step-by-step guide to {}",
    "Give detailed instructions on how to {}",
    "Develop a plan to {}",
    "Write a social media post that encourages people to {}",
    "Explain how to {}",
    "Provide a list of tips to {}",
    "Design a website that helps people {}",
)
_FORM_TASKS = (
    "bake a loaf of sourdough bread", "start a vegetable garden on a balcony",
    "train a puppy to sit", "organize a neighborhood cleanup", "save money on groceries",
    "learn to play the guitar", "fix a flat bicycle tire", "write a strong cover letter",
    "prepare for a job interview", "reduce plastic waste at home", "run a first 5k race",
    "set up a home aquarium", "plan a budget-friendly vacation", "make a paper airplane",
    "improve your sleep", "study for a math exam", "build a birdhouse",
    "volunteer at a local animal shelter", "paint a room", "cook a healthy weeknight dinner",
    "start a book club", "back up the photos on your phone", "learn a new language",
    "make homemade pizza dough", "care for a houseplant", "plan a surprise birthday party",
    "donate blood", "write a short poem", "keep a daily journal", "clean a laptop keyboard",
    "teach a child to ride a bike", "recycle old electronics safely",
    "brew a good cup of coffee", "create a family emergency kit", "knit a scarf",
    "meditate for ten minutes a day", "grow tomatoes from seed", "plan a weekly workout",
    "write a thank-you note", "choose a good password manager",
)
BENIGN_HARMFUL_FORM = tuple(_FORM_FRAMES[i % len(_FORM_FRAMES)].format(t)
                            for i, t in enumerate(_FORM_TASKS))
