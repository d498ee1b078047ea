"""Out-of-scope messages for the confidence benchmark: hand-written chit-chat tagged by domain (written for
this benchmark, no dataset text), texts of other public sets' intents outside the target's domains (read from the
converted datasets at run time, never stored), and messages without content / keyboard mash."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Dict, List, Set, Union

# hand-written out-of-scope messages, by domain; a target that covers a domain does not get that domain's
CHITCHAT: Dict[str, List[str]] = {
    "weather": [
        "明天北京会下雨吗",
        "这周末天气怎么样",
        "今天要不要带伞",
        "外面现在多少度",
        "下周会降温吗",
        "上海今天空气质量好不好",
        "后天有没有台风",
    ],
    "music": [
        "放一首周杰伦的歌",
        "我想听点轻音乐",
        "来首摇滚乐",
        "这首歌叫什么名字",
        "播放最新的流行歌曲",
        "有没有适合跑步听的歌单",
    ],
    "recipe": [
        "红烧肉怎么做",
        "教我做一道西红柿炒蛋",
        "蛋糕需要烤多久",
        "饺子馅怎么调才好吃",
        "清蒸鱼要放什么调料",
        "怎么煮米饭不粘锅",
    ],
    "travel": [
        "帮我订一张去成都的机票",
        "明天去上海的高铁还有票吗",
        "飞广州的航班几点起飞",
        "从北京到西安坐火车要多久",
        "帮我查一下航班延误了没有",
        "我想订一家三亚的酒店",
        "去杭州旅游有什么推荐的景点",
    ],
    "stock": [
        "今天股市涨了吗",
        "腾讯的股价是多少",
        "最近买什么基金比较好",
        "上证指数收盘多少点",
        "比特币现在多少钱一个",
    ],
    "sports": [
        "昨晚的足球比赛谁赢了",
        "湖人队今天有比赛吗",
        "世界杯什么时候开始",
        "中国女排的比分是多少",
        "推荐一个健身计划",
    ],
    "movie": [
        "最近有什么好看的电影",
        "附近的电影院几点开门",
        "帮我推荐一部科幻片",
        "这部电视剧一共多少集",
        "周末有什么综艺节目",
    ],
    "news": ["今天有什么新闻", "最近有什么科技新闻", "给我讲讲今天的头条"],
    "map": ["最近的加油站在哪里", "去火车站怎么走", "附近有没有好吃的火锅店", "从这里到机场要开多久"],
    "health": ["感冒了吃什么药好", "头疼怎么办", "每天应该喝多少水", "失眠怎么调理"],
    "math": ["三百乘以二十五等于多少", "一百的平方根是多少", "帮我算一下七加八"],
    "translation": ["苹果用英语怎么说", "帮我把这句话翻译成日语", "hello是什么意思"],
    "knowledge": [
        "地球到月亮有多远",
        "长城有多长",
        "珠穆朗玛峰有多高",
        "谁发明了电话",
        "鲸鱼是鱼吗",
        "光速是多少",
        "中国有多少个省",
    ],
    "chat": [
        "你叫什么名字",
        "你今年几岁了",
        "讲个笑话给我听",
        "你喜欢吃什么",
        "我今天好无聊",
        "你有男朋友吗",
        "你会唱歌吗",
        "我心情不太好",
        "陪我聊聊天吧",
        "你觉得人生的意义是什么",
        "你是男的还是女的",
        "我想养一只猫",
        "你最喜欢什么颜色",
        "晚上吃什么好呢",
    ],
    "phone": [
        "给妈妈打个电话",
        "帮我发条短信给小王",
        "把音量调大一点",
        "打开手电筒",
        "设置一个明早七点的闹钟",
        "提醒我下午三点开会",
    ],
    "shopping": [
        "这件衣服有没有大一号的",
        "双十一有什么优惠活动",
        "帮我买一箱牛奶",
        "哪款手机性价比最高",
        "我的快递到哪了",
    ],
    "bank": ["我的信用卡额度是多少", "怎么开通网上银行", "帮我查一下余额", "房贷利率是多少", "转账手续费怎么收"],
    "education": ["怎么学好英语", "考研要准备多久", "推荐几本好看的小说", "孩子不爱写作业怎么办", "李白写过哪些诗"],
    "work": ["怎么写一份好的简历", "面试的时候要注意什么", "明天的会议改到几点了", "帮我写一封请假邮件"],
    "home": ["把客厅的灯关掉", "空调调到二十六度", "打开扫地机器人", "热水器怎么设置温度"],
    "misc": [
        "猫为什么喜欢睡觉",
        "宇宙有尽头吗",
        "周末去哪里玩比较好",
        "怎么才能减肥",
        "车子保养多久一次",
        "如何种好多肉植物",
        "狗狗不吃饭怎么办",
        "明年是什么生肖年",
    ],
}
NO_CONTENT: List[str] = [
    "😀😀😀",
    "🙂",
    "👍👍",
    "？？？",
    "。。。",
    "!!!",
    "……",
    "~~~",
    "🤔",
    "😂😂😂😂",
    "[]",
    "@#$%^&",
    "(>_<)",
    "💰💰",
    "—— ——",
    "🎉🎉🎉",
    "？！",
    "*_*",
    "、、、",
    "🙏",
]
KEYBOARD_MASH: List[str] = [
    "asdfghjkl",
    "qwerqwer",
    "jjjjjjjj",
    "zxcvbnm",
    "sdkfjhsdkjf",
    "aaaaaa",
    "hjkl;",
    "ppppp",
    "xyzxyz",
    "lkjhg",
]

Selector = Union[Set[str], Callable[[str], bool]]
# telemarketing intents no general assistant covers
TELE_OOS = {"价格太高", "查收费方式", "号码来源", "资金困难", "资金充足", "已经购买", "骚扰电话", "投诉警告", "转人工客服",
            "查优惠政策", "查公司介绍", "质疑来电号码", "打错电话", "语音信箱"}  # fmt: skip
MASSIVE_OOS = ("iot", "物联网", "外卖", "列表", "列出", "推荐", "社交", "音量", "运输出租车", "玩游戏")
SMP2017_FOR_CAIS = {"bus", "flight", "train", "stock", "lottery", "email", "message", "telephone", "map", "cookbook",
                    "translation", "calc", "app", "website", "contacts", "cinemas", "epg", "tvchannel", "video", "match"}  # fmt: skip
SMP2017_FOR_MASSIVE = {"stock", "lottery", "poetry", "riddle", "health", "novel", "epg", "tvchannel", "translation"}
# per target: (source dataset, its intents to use) and the chit-chat domains the target covers
SPEC: Dict[str, Dict[str, object]] = {
    "smp2017": {
        "sources": [("telemarketing", TELE_OOS), ("massive", lambda y: y.startswith(MASSIVE_OOS))],
        "covers": {
            "weather",
            "music",
            "recipe",
            "travel",
            "stock",
            "sports",
            "movie",
            "news",
            "map",
            "health",
            "math",
            "translation",
            "chat",
            "phone",
            "education",
            "knowledge",
        },  # fmt: skip
    },
    "smp2019": {
        "sources": [("telemarketing", TELE_OOS), ("massive", lambda y: y.startswith(MASSIVE_OOS))],
        "covers": {
            "weather",
            "music",
            "recipe",
            "travel",
            "stock",
            "sports",
            "movie",
            "news",
            "map",
            "health",
            "math",
            "translation",
            "phone",
            "education",
        },  # fmt: skip
    },
    "cais": {
        "sources": [("smp2017", SMP2017_FOR_CAIS), ("telemarketing", TELE_OOS)],
        "covers": {"weather", "music", "news", "chat", "knowledge", "phone", "education"},
    },
    "telemarketing": {
        "sources": [("smp2017", lambda y: y != "chat"), ("massive", lambda y: not y.startswith("一般"))],
        "covers": {"chat"},
    },
    "massive": {
        "sources": [("smp2017", SMP2017_FOR_MASSIVE), ("telemarketing", TELE_OOS)],
        "covers": {
            "weather",
            "music",
            "recipe",
            "travel",
            "sports",
            "movie",
            "news",
            "map",
            "math",
            "chat",
            "phone",
            "home",
            "shopping",
            "knowledge",
            "work",
            "misc",
        },  # fmt: skip
    },
}
PER_SOURCE = 300


def out_of_scope_sets(target: str, test_file: Callable[[str], Path]) -> Dict[str, List[str]]:
    """``{source: texts}`` for ``target``: up to 300 test texts of each source's out-of-scope intents (a fixed
    seeded sample) and the chit-chat of the domains the target does not cover. ``test_file(name)`` is the
    converted test split of dataset ``name``."""
    from rasa.shared.nlu.training_data.loading import load_data

    spec = SPEC[target]
    rng = random.Random(1)
    out: Dict[str, List[str]] = {}
    for source, selector in spec["sources"]:  # type: ignore[attr-defined]
        keep = selector if callable(selector) else selector.__contains__
        examples = load_data(str(test_file(source))).intent_examples
        texts = sorted({m.get("text").strip() for m in examples if m.get("intent") and keep(m.get("intent"))})
        rng.shuffle(texts)
        out[source] = texts[:PER_SOURCE]
    out["chitchat"] = [t for domain, texts in CHITCHAT.items() if domain not in spec["covers"] for t in texts]  # type: ignore[operator]
    return out
