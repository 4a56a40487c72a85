"""spm_corpus.py — public-domain training text for the SentencePiece fixtures (tools/gen_spm_fixture.py).

Every text here is in the public domain: English works published before 1929 (and US government
documents, which are not subject to copyright), and classical Chinese texts written more than a
thousand years ago. They were typed in for this fixture from the well-known editions; small slips of
transcription do not matter for their purpose (training a tokenizer), so treat them as excerpts, not
as authoritative editions.

  ENGLISH
    - Abraham Lincoln, the Gettysburg Address (1863; US government document)
    - Thomas Jefferson et al., the Declaration of Independence, preamble (1776)
    - Jane Austen, Pride and Prejudice, opening of chapter 1 (1813)
    - Charles Dickens, A Tale of Two Cities, opening (1859)
    - Herman Melville, Moby-Dick, opening of chapter 1 (1851)
    - Lewis Carroll, Alice's Adventures in Wonderland, opening of chapter 1 (1865)
    - The King James Bible (1611): Genesis 1:1-8, Psalm 23
  CHINESE (traditional characters)
    - 老子《道德經》 chapters 1-3, 8, 11 (c. 4th century BC)
    - 《論語》 學而 1-4, 為政 1-4, 17 (c. 5th-4th century BC)
    - 周興嗣《千字文》, the first 256 characters (6th century)
    - 《三字經》, the opening (13th century)
    - 李白〈靜夜思〉, 孟浩然〈春曉〉, 王之渙〈登鸛雀樓〉 (8th century)
"""

ENGLISH = [
    # Gettysburg Address
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
    "Liberty, and dedicated to the proposition that all men are created equal.",
    "Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so "
    "dedicated, can long endure. We are met on a great battle-field of that war. We have come to dedicate a "
    "portion of that field, as a final resting place for those who here gave their lives that that nation might "
    "live. It is altogether fitting and proper that we should do this.",
    "But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this ground. The "
    "brave men, living and dead, who struggled here, have consecrated it, far above our poor power to add or "
    "detract. The world will little note, nor long remember what we say here, but it can never forget what they "
    "did here.",
    "It is for us the living, rather, to be dedicated here to the unfinished work which they who fought here have "
    "thus far so nobly advanced. It is rather for us to be here dedicated to the great task remaining before us "
    "-- that from these honored dead we take increased devotion to that cause for which they gave the last full "
    "measure of devotion -- that we here highly resolve that these dead shall not have died in vain -- that this "
    "nation, under God, shall have a new birth of freedom -- and that government of the people, by the people, "
    "for the people, shall not perish from the earth.",
    # Declaration of Independence
    "When in the Course of human events, it becomes necessary for one people to dissolve the political bands "
    "which have connected them with another, and to assume among the powers of the earth, the separate and equal "
    "station to which the Laws of Nature and of Nature's God entitle them, a decent respect to the opinions of "
    "mankind requires that they should declare the causes which impel them to the separation.",
    "We hold these truths to be self-evident, that all men are created equal, that they are endowed by their "
    "Creator with certain unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness. "
    "That to secure these rights, Governments are instituted among Men, deriving their just powers from the "
    "consent of the governed.",
    # Pride and Prejudice
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife.",
    "However little known the feelings or views of such a man may be on his first entering a neighbourhood, this "
    "truth is so well fixed in the minds of the surrounding families, that he is considered the rightful property "
    "of some one or other of their daughters.",
    "\"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that Netherfield Park is let at last?\"",
    "Mr. Bennet replied that he had not.",
    "\"But it is,\" returned she; \"for Mrs. Long has just been here, and she told me all about it.\"",
    "Mr. Bennet made no answer.",
    "\"Do you not want to know who has taken it?\" cried his wife impatiently.",
    "\"You want to tell me, and I have no objection to hearing it.\"",
    "This was invitation enough.",
    # A Tale of Two Cities
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, "
    "it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of "
    "Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had "
    "nothing before us, we were all going direct to Heaven, we were all going direct the other way.",
    "There were a king with a large jaw and a queen with a plain face, on the throne of England; there were a king "
    "with a large jaw and a queen with a fair face, on the throne of France.",
    # Moby-Dick
    "Call me Ishmael. Some years ago -- never mind how long precisely -- having little or no money in my purse, "
    "and nothing particular to interest me on shore, I thought I would sail about a little and see the watery "
    "part of the world. It is a way I have of driving off the spleen and regulating the circulation.",
    "Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul; "
    "whenever I find myself involuntarily pausing before coffin warehouses, and bringing up the rear of every "
    "funeral I meet; then, I account it high time to get to sea as soon as I can.",
    # Alice's Adventures in Wonderland
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: once "
    "or twice she had peeped into the book her sister was reading, but it had no pictures or conversations in it, "
    "\"and what is the use of a book,\" thought Alice \"without pictures or conversations?\"",
    "So she was considering in her own mind (as well as she could, for the hot day made her feel very sleepy and "
    "stupid), whether the pleasure of making a daisy-chain would be worth the trouble of getting up and picking "
    "the daisies, when suddenly a White Rabbit with pink eyes ran close by her.",
    "There was nothing so very remarkable in that; nor did Alice think it so very much out of the way to hear the "
    "Rabbit say to itself, \"Oh dear! Oh dear! I shall be late!\"",
    "Down, down, down. Would the fall never come to an end? \"I wonder how many miles I've fallen by this time?\" "
    "she said aloud. \"I must be getting somewhere near the centre of the earth.\"",
    # King James Bible
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God "
    "moved upon the face of the waters.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good: and God divided the light from the darkness.",
    "And God called the light Day, and the darkness he called Night. And the evening and the morning were the "
    "first day.",
    "And God said, Let there be a firmament in the midst of the waters, and let it divide the waters from the "
    "waters.",
    "The LORD is my shepherd; I shall not want.",
    "He maketh me to lie down in green pastures: he leadeth me beside the still waters.",
    "He restoreth my soul: he leadeth me in the paths of righteousness for his name's sake.",
    "Yea, though I walk through the valley of the shadow of death, I will fear no evil: for thou art with me; thy "
    "rod and thy staff they comfort me.",
    "Thou preparest a table before me in the presence of mine enemies: thou anointest my head with oil; my cup "
    "runneth over.",
    "Surely goodness and mercy shall follow me all the days of my life: and I will dwell in the house of the LORD "
    "for ever.",
]

CHINESE = [
    # 道德經
    "道可道，非常道。名可名，非常名。無名天地之始；有名萬物之母。故常無欲，以觀其妙；常有欲，以觀其徼。"
    "此兩者，同出而異名，同謂之玄。玄之又玄，衆妙之門。",
    "天下皆知美之為美，斯惡已。皆知善之為善，斯不善已。故有無相生，難易相成，長短相較，高下相傾，音聲相和，"
    "前後相隨。是以聖人處無為之事，行不言之教；萬物作焉而不辭，生而不有，為而不恃，功成而弗居。夫唯弗居，是以不去。",
    "不尚賢，使民不爭；不貴難得之貨，使民不為盜；不見可欲，使民心不亂。是以聖人之治，虛其心，實其腹，弱其志，"
    "強其骨。常使民無知無欲。使夫智者不敢為也。為無為，則無不治。",
    "上善若水。水善利萬物而不爭，處衆人之所惡，故幾於道。居善地，心善淵，與善仁，言善信，政善治，事善能，"
    "動善時。夫唯不爭，故無尤。",
    "三十輻共一轂，當其無，有車之用。埏埴以為器，當其無，有器之用。鑿戶牖以為室，當其無，有室之用。"
    "故有之以為利，無之以為用。",
    # 論語
    "子曰：「學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？人不知而不慍，不亦君子乎？」",
    "有子曰：「其為人也孝弟，而好犯上者，鮮矣；不好犯上，而好作亂者，未之有也。君子務本，本立而道生。"
    "孝弟也者，其為仁之本與！」",
    "子曰：「巧言令色，鮮矣仁！」",
    "曾子曰：「吾日三省吾身：為人謀而不忠乎？與朋友交而不信乎？傳不習乎？」",
    "子曰：「為政以德，譬如北辰，居其所而衆星共之。」",
    "子曰：「詩三百，一言以蔽之，曰：思無邪。」",
    "子曰：「道之以政，齊之以刑，民免而無恥；道之以德，齊之以禮，有恥且格。」",
    "子曰：「吾十有五而志于學，三十而立，四十而不惑，五十而知天命，六十而耳順，七十而從心所欲，不踰矩。」",
    "子曰：「由！誨女知之乎！知之為知之，不知為不知，是知也。」",
    # 千字文
    "天地玄黃，宇宙洪荒。日月盈昃，辰宿列張。寒來暑往，秋收冬藏。閏餘成歲，律呂調陽。雲騰致雨，露結為霜。"
    "金生麗水，玉出崑岡。劍號巨闕，珠稱夜光。果珍李柰，菜重芥薑。海鹹河淡，鱗潛羽翔。龍師火帝，鳥官人皇。"
    "始制文字，乃服衣裳。推位讓國，有虞陶唐。弔民伐罪，周發殷湯。坐朝問道，垂拱平章。愛育黎首，臣伏戎羌。"
    "遐邇一體，率賓歸王。鳴鳳在竹，白駒食場。化被草木，賴及萬方。蓋此身髮，四大五常。恭惟鞠養，豈敢毀傷。"
    "女慕貞絜，男效才良。知過必改，得能莫忘。罔談彼短，靡恃己長。信使可覆，器欲難量。墨悲絲染，詩讚羔羊。"
    "景行維賢，克念作聖。德建名立，形端表正。空谷傳聲，虛堂習聽。禍因惡積，福緣善慶。尺璧非寶，寸陰是競。",
    # 三字經
    "人之初，性本善。性相近，習相遠。苟不教，性乃遷。教之道，貴以專。昔孟母，擇鄰處。子不學，斷機杼。"
    "竇燕山，有義方。教五子，名俱揚。養不教，父之過。教不嚴，師之惰。子不學，非所宜。幼不學，老何為。",
    # Tang poems
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
]


def lines():
    """The training sentences, one per line as the trainer reads them."""
    return ENGLISH + CHINESE
